import type { NbdClient } from '../nbd/index';
import type { Area } from '../source/types';

/**
 * The CBT canary. An incremental copies only what the change tracking calls changed; if the
 * tracking missed writes, the chain silently differs from the disk. So each incremental also
 * reads a few blocks the tracking calls *unchanged* from the point-in-time view and compares
 * them with what the chain already holds there. With n blocks sampled uniformly from the
 * unchanged part of the disk, a fraction f of it wrongly unchanged is caught with probability
 * 1 − (1 − f)^n: likely for large losses, never proof that nothing was missed.
 */
export interface CanaryOptions {
  /** Blocks sampled per disk; 0 turns the canary off. Default 64. */
  blocks: number;
  /** Bytes per block (a multiple of 512). Default 64 KiB. */
  blockSize: number;
  /** Seeds the sampling, for tests that replay it; random when absent. */
  seed?: number;
}

export const DEFAULT_CANARY: CanaryOptions = { blocks: 64, blockSize: 64 * 1024 };

export interface CanaryResult {
  /** Bytes read from the source and from the chain to compare (each side). */
  sampledBytes: number;
  /** Bytes of sampled blocks whose source and chain contents differ. */
  mismatchedBytes: number;
}

/** mulberry32: a small seeded generator, so a trial can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Picks up to `blocks` distinct aligned blocks of `blockSize` that lie wholly outside every
 * changed area (`changed` sorted by offset, not overlapping), uniformly among all such blocks.
 * Pure: the same inputs and random source give the same offsets, in ascending order.
 */
export function sampleUnchanged(
  size: number,
  changed: Area[],
  blocks: number,
  blockSize: number,
  random: () => number,
): number[] {
  // Runs of whole unchanged blocks: [first block index, count].
  const runs: Array<[number, number]> = [];
  let total = 0;
  let at = 0;
  const addGap = (from: number, to: number) => {
    const first = Math.ceil(from / blockSize);
    const end = Math.floor(to / blockSize);
    if (end > first) {
      runs.push([first, end - first]);
      total += end - first;
    }
  };
  for (const a of changed) {
    addGap(at, a.offset);
    at = Math.max(at, a.offset + a.length);
  }
  addGap(at, size);
  const want = Math.min(blocks, total);
  const picked = new Set<number>();
  // Rejection sampling is quick while want ≪ total; a dense request takes every block.
  if (want === total) for (let i = 0; i < total; i++) picked.add(i);
  while (picked.size < want) picked.add(Math.floor(random() * total));
  const offsets: number[] = [];
  for (const ordinal of [...picked].sort((x, y) => x - y)) {
    let rest = ordinal;
    for (const [first, count] of runs) {
      if (rest < count) {
        offsets.push((first + rest) * blockSize);
        break;
      }
      rest -= count;
    }
  }
  return offsets;
}

/**
 * Reads each sampled block from the source's point in time and from the chain (the new target,
 * which shows its backing files where it holds nothing of its own) and counts what differs.
 */
export async function runCanary(
  size: number,
  changed: Area[],
  source: NbdClient,
  chain: NbdClient,
  options: CanaryOptions,
): Promise<CanaryResult> {
  if (options.blocks <= 0) return { sampledBytes: 0, mismatchedBytes: 0 };
  const random = seededRandom(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  const offsets = sampleUnchanged(size, changed, options.blocks, options.blockSize, random);
  const a = Buffer.allocUnsafe(options.blockSize);
  const b = Buffer.allocUnsafe(options.blockSize);
  let mismatchedBytes = 0;
  // Every sampled block lies wholly inside the disk.
  for (const offset of offsets) {
    const fromSource = await source.readInto(offset, a);
    const fromChain = await chain.readInto(offset, b);
    if (!fromSource.equals(fromChain)) mismatchedBytes += options.blockSize;
  }
  return { sampledBytes: offsets.length * options.blockSize, mismatchedBytes };
}
