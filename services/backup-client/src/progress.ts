import type { ProgressPhase } from '@tidemark/shared';
import type { ProgressLine } from './protocol';

/**
 * Tracks bytes per disk and writes a progress line at most every `intervalMs`, and at every
 * phase change.
 */
export class ProgressReporter {
  private readonly disks = new Map<string, { bytesDone: number; bytesTotal: number }>();
  private phase: ProgressPhase = 'preparing';
  private sequence = 0;
  private lastAt = Date.now();
  private lastBytes = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly jobId: string,
    private readonly write: (line: ProgressLine) => void,
    private readonly intervalMs = 1000,
  ) {}

  addDisk(diskKey: string): void {
    this.disks.set(diskKey, { bytesDone: 0, bytesTotal: 0 });
  }

  setTotal(diskKey: string, bytesTotal: number): void {
    const d = this.disks.get(diskKey);
    if (d) d.bytesTotal = bytesTotal;
  }

  setDone(diskKey: string, bytesDone: number): void {
    const d = this.disks.get(diskKey);
    if (d) d.bytesDone = bytesDone;
  }

  setPhase(phase: ProgressPhase): void {
    if (phase === this.phase) return;
    this.phase = phase;
    this.emit();
  }

  start(): void {
    this.emit();
    this.timer = setInterval(() => this.emit(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  emit(): void {
    const now = Date.now();
    const bytes = [...this.disks.values()].reduce((s, d) => s + d.bytesDone, 0);
    const seconds = (now - this.lastAt) / 1000;
    const rate = seconds > 0 ? Math.max(0, Math.round((bytes - this.lastBytes) / seconds)) : 0;
    this.lastAt = now;
    this.lastBytes = bytes;
    this.write({
      type: 'progress',
      jobId: this.jobId,
      phase: this.phase,
      sequence: this.sequence++,
      disks: [...this.disks].map(([diskKey, d]) => ({ diskKey, ...d })),
      bytesPerSecond: rate,
    });
  }
}
