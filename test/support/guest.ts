/**
 * A "guest" for running disks: it writes over the NBD export of qemu-storage-daemon, one stamped
 * cluster at a time, so a copy of the disk shows exactly which writes it holds, and whether it is
 * one point in time.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { NbdClient } from '@tidemark/backup-client/nbd/index';
import { CLUSTER, MiB, rng, type StorageDaemon } from './disks';

export const WRITE_AREA = 8 * MiB; // the guest writes clusters in the first 8 MiB
export const CLUSTERS = WRITE_AREA / CLUSTER;

/**
 * The guest: writes one cluster at a time (each awaited), every write stamped with its index,
 * so any copy of the disk shows which writes it holds.
 */
export class Guest {
  /** writes[i-1] = cluster written by write i. */
  readonly writes: number[] = [];
  private stopped = false;
  private running: Promise<void> | undefined;
  private constructor(private readonly nbd: NbdClient) {}

  static async attach(daemon: StorageDaemon): Promise<Guest> {
    return new Guest(
      await NbdClient.connect({ path: daemon.nbdSocket }, { exportName: daemon.exportName }),
    );
  }

  start(seed: number): void {
    const random = rng(seed);
    this.stopped = false;
    this.running = (async () => {
      while (!this.stopped) {
        const cluster = Math.floor(random() * CLUSTERS);
        const index = this.writes.length + 1;
        const data = Buffer.alloc(CLUSTER, index & 0xff);
        data.writeBigUInt64BE(BigInt(index), 0);
        await this.nbd.write(cluster * CLUSTER, data);
        this.writes.push(cluster);
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
    await this.nbd.flush();
  }

  async detach(): Promise<void> {
    await this.nbd.disconnect();
  }
}

/** Which guest write each cluster of a raw image shows (0 = none). */
export function stamps(raw: string): number[] {
  const fd = openSync(raw, 'r');
  const b = Buffer.alloc(8);
  const out: number[] = [];
  for (let c = 0; c < CLUSTERS; c++) {
    readSync(fd, b, 0, 8, c * CLUSTER);
    out.push(Number(b.readBigUInt64BE(0)));
  }
  closeSync(fd);
  return out;
}

/**
 * The copy is a point in time if some k exists such that every cluster shows the last write
 * ≤ k to it. Returns k, or throws naming the first cluster that breaks it.
 */
export function pointInTime(seen: number[], writes: number[]): number {
  const k = Math.max(0, ...seen);
  const expected = new Array<number>(CLUSTERS).fill(0);
  for (let i = 1; i <= k; i++) expected[writes[i - 1] as number] = i;
  for (let c = 0; c < CLUSTERS; c++)
    if (seen[c] !== expected[c])
      throw new Error(
        `cluster ${c} shows write ${seen[c]} but the disk after write ${k} held write ${expected[c]}`,
      );
  return k;
}
