import { formatLine, manifestPath, parseLine, partialPath, type ClientLine } from './protocol';

describe('the runner↔client protocol', () => {
  const disk = {
    diskKey: 'd0',
    changeId: 'u/1',
    bytesTransferred: 5,
    targetPath: '/r/d0.qcow2',
    bytesTotal: 9,
    fullReason: null,
    canary: { sampledBytes: 4096, mismatchedBytes: 0 },
  };

  it('reads back every line the client writes, one JSON line each', () => {
    const lines: ClientLine[] = [
      {
        type: 'progress',
        jobId: 'j1',
        phase: 'copying',
        sequence: 3,
        disks: [{ diskKey: 'd0', bytesDone: 1, bytesTotal: 9 }],
        bytesPerSecond: 7,
      },
      { type: 'point-in-time', diskKey: 'd0', changeId: 'u/1' },
      { type: 'result', jobId: 'j1', status: 'completed', disks: [disk], bytesTransferred: 5 },
      {
        type: 'result',
        jobId: 'j1',
        status: 'failed',
        code: 'COPY_FAILED',
        message: 'm',
        retryable: true,
        finishedDisks: [disk],
      },
    ];
    for (const line of lines) {
      const text = formatLine(line);
      expect(text.endsWith('\n') && !text.slice(0, -1).includes('\n')).toBe(true);
      expect(parseLine(text.trimEnd())).toEqual(line);
    }
  });

  it('takes a failure printed before the job was read (no job id, no finished disks)', () => {
    expect(
      parseLine('{"type":"result","status":"failed","code":"X","message":"m","retryable":false}'),
    ).toMatchObject({ status: 'failed', code: 'X', finishedDisks: [] });
  });

  it('refuses what is not the protocol', () => {
    for (const text of [
      'Starting copy... 10%',
      '{"type":"result","status":"completed"}',
      '{"type":"progress","phase":"resting","disks":[],"bytesPerSecond":0}',
      '',
    ])
      expect(parseLine(text)).toBeNull();
  });

  it('names the manifest and the partial file beside a target', () => {
    expect(manifestPath('/r/d0.qcow2')).toBe('/r/d0.qcow2.tidemark.json');
    expect(partialPath('/r/d0.qcow2')).toBe('/r/d0.qcow2.partial');
  });
});
