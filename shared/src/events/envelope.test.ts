import { makeEvent, parseEvent, MAX_EVENT_BYTES } from './envelope';

const bytes = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));
const completed = () =>
  makeEvent('backup.completed', {
    jobId: 'job-1',
    jobType: 'backup',
    data: {
      vmName: 'vm1',
      backupType: 'full',
      repositoryId: 'repo-1',
      bytesTransferred: 1,
      disks: [{ diskKey: 'd0', changeId: 'a/1', bytesTransferred: 1 }],
    },
  });

describe('parseEvent', () => {
  it('accepts what makeEvent builds, with defaults filled in', () => {
    const parsed = parseEvent(bytes(completed()));
    expect(parsed).toMatchObject({
      ok: true,
      event: { type: 'backup.completed', data: { policyId: null } },
    });
  });

  it.each([
    ['not JSON', '{"id":', 'not JSON', ''],
    ['wrong type', { ...completed(), jobId: 42 }, 'invalid envelope', 'jobId'],
    [
      'missing field',
      { ...completed(), data: { ...completed().data, disks: undefined } },
      'invalid backup.completed data',
      'data.disks',
    ],
    ['unknown event type', { ...completed(), type: 'backup.exploded' }, 'invalid envelope', 'type'],
    ['unknown version', { ...completed(), version: 7 }, 'unknown version 7', 'version'],
    [
      'path in a disk key',
      {
        ...completed(),
        data: {
          ...completed().data,
          disks: [{ diskKey: '../etc', changeId: 'a/1', bytesTransferred: 1 }],
        },
      },
      'invalid',
      'data.disks.0.diskKey',
    ],
  ])('refuses %s, naming the field', (_what, body, reason, path) => {
    const parsed = parseEvent(bytes(body));
    expect(parsed.ok).toBe(false);
    if (parsed.ok) return;
    expect(parsed.reason).toContain(reason);
    expect(parsed.issues.map((i) => i.path)).toContain(path);
  });

  it('refuses an oversized body before parsing it', () => {
    const parsed = parseEvent(Buffer.alloc(MAX_EVENT_BYTES + 1, 0x20));
    expect(parsed).toMatchObject({ ok: false, reason: 'event too large' });
  });

  it('makeEvent refuses invalid data with the field named', () => {
    expect(() =>
      makeEvent('backup.progress', {
        jobId: 'job-1',
        jobType: 'backup',
        data: { phase: 'copying', sequence: -1, bytesPerSecond: 0, disks: [] },
      }),
    ).toThrow(/data\.sequence/);
  });
});
