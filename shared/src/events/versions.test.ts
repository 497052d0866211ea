import { currentVersions, eventVersions, makeEvent, parseEvent, upcasters } from './envelope';
import { knownFailure } from './failure-codes';

const failedV1 = (code: string, message = 'disk d0: broken') =>
  Buffer.from(
    JSON.stringify({
      id: 'e-1',
      type: 'backup.failed',
      version: 1,
      occurredAt: '2026-11-22T08:15:00.000Z',
      jobId: 'job-1',
      jobType: 'backup',
      data: { code, message, retryable: true },
    }),
  );

describe('event versions', () => {
  it('writes each type at its newest version, and can read every older one', () => {
    expect(currentVersions['backup.failed']).toBe(2);
    expect(currentVersions['backup.start']).toBe(1);
    for (const [type, versions] of Object.entries(eventVersions)) {
      const current = currentVersions[type as keyof typeof currentVersions];
      for (const v of Object.keys(versions)
        .map(Number)
        .filter((v) => v !== current))
        expect(upcasters[type as keyof typeof upcasters]?.[v]).toBeInstanceOf(Function);
    }
  });

  it('given backup.failed v2, when a code is not in the table, then makeEvent names data.code', () => {
    const event = makeEvent('backup.failed', {
      jobId: 'job-1',
      jobType: 'backup',
      data: { code: 'LEASE_EXPIRED', message: 'silent', retryable: true },
    });
    expect(event.version).toBe(2);
    expect(parseEvent(Buffer.from(JSON.stringify(event)))).toMatchObject({ ok: true, event });
    const invented = { ...event, data: { ...event.data, code: 'INVENTED' } };
    expect(parseEvent(Buffer.from(JSON.stringify(invented)))).toMatchObject({
      ok: false,
      issues: [{ path: 'data.code' }],
    });
  });

  it('given a v1 failure with a code of the table, then it reads as it was sent', () => {
    expect(parseEvent(failedV1('FULL_BACKUP_REQUIRED'))).toMatchObject({
      ok: true,
      event: {
        version: 1,
        data: { code: 'FULL_BACKUP_REQUIRED', message: 'disk d0: broken', finishedDisks: [] },
      },
    });
  });

  it('given a v1 failure with any other code, then it reads as CLIENT_FAILED, nothing lost', () => {
    expect(parseEvent(failedV1('X'))).toMatchObject({
      ok: true,
      event: { data: { code: 'CLIENT_FAILED', message: 'X: disk d0: broken', retryable: true } },
    });
    expect(parseEvent(failedV1('lower'))).toMatchObject({ ok: false }); // never valid v1
    expect(knownFailure('OLD', 'm'.repeat(4096)).message).toHaveLength(4096);
    expect(knownFailure('not a code', 'm')).toEqual({ code: 'CLIENT_FAILED', message: 'm' });
  });
});
