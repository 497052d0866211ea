import { ProgressReporter } from './progress';
import type { ProgressLine } from './protocol';

describe('ProgressReporter', () => {
  it('writes per-disk bytes, a rising sequence and a line at each phase change', () => {
    const lines: ProgressLine[] = [];
    const p = new ProgressReporter('job-1', (l) => lines.push(l), 60_000);
    p.addDisk('a');
    p.addDisk('b');
    p.start();
    p.setTotal('a', 100);
    p.setTotal('b', 50);
    p.setPhase('copying');
    p.setDone('a', 40);
    p.emit();
    p.setPhase('copying'); // no change, no line
    p.setPhase('finalizing');
    p.stop();
    expect(lines.map((l) => l.phase)).toEqual(['preparing', 'copying', 'copying', 'finalizing']);
    expect(lines.map((l) => l.sequence)).toEqual([0, 1, 2, 3]);
    expect(lines[2]?.disks).toEqual([
      { diskKey: 'a', bytesDone: 40, bytesTotal: 100 },
      { diskKey: 'b', bytesDone: 0, bytesTotal: 50 },
    ]);
    expect(lines.every((l) => l.jobId === 'job-1' && l.bytesPerSecond >= 0)).toBe(true);
  });
});
