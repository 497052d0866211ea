import { createDigester } from '../digest';
import { AllocationFlag, type NbdClient } from '../nbd/index';
import type { Area, SourceSnapshot } from '../source/types';

/** One range of the target as this copy wrote it: data (with its digest) or zeroes. */
export interface WrittenExtent {
  offset: number;
  length: number;
  /** Hex digest (`DIGEST_ALGORITHM`) of the data; absent for a range written as zeroes. */
  digest?: string;
}

export interface CopyPlan {
  /** Ranges to copy as data. */
  data: Area[];
  /** Changed ranges that read as zero now. */
  zero: Area[];
  dataBytes: number;
}

export interface CopyOptions {
  /** Bytes per READ/WRITE pair. Default 512 KiB. */
  chunkSize?: number;
  /** Chunks being copied at once. Default 32. */
  inFlight?: number;
  /** Most bytes of data read per second (to spare production storage); unlimited if unset. */
  maxBytesPerSecond?: number;
  /** Called after every chunk with the bytes of data copied so far. */
  onProgress?: (bytesDone: number) => void;
  /**
   * Told every extent written (data chunks and zero ranges) in offset order, each as soon as
   * every extent before it is written too; awaited. The copy holds no list of them: at most
   * `REORDER_WINDOW` per worker wait for one before them to finish.
   */
  onWritten?: (extent: WrittenExtent) => void | Promise<void>;
  signal?: AbortSignal;
}

const ALLOC_SPAN = 0x80000000;
/**
 * 512 KiB requests, 32 at a time: qemu-nbd serves 4 MiB reads at less than half the rate of
 * 256 KiB–1 MiB ones on this class of machine (it maps and faults in a fresh bounce buffer per
 * large request), see the copy bench.
 */
const DEFAULT_CHUNK = 512 * 1024;
const DEFAULT_IN_FLIGHT = 32;

/**
 * Walks the changed areas of `snapshot` and splits them, by `base:allocation` of the
 * point-in-time view, into data to copy and ranges that now read as zero.
 */
export async function planCopy(
  snapshot: Pick<SourceSnapshot, 'size' | 'queryChangedDiskAreas'>,
  reader: NbdClient,
): Promise<CopyPlan> {
  const plan: CopyPlan = { data: [], zero: [], dataBytes: 0 };
  const push = (list: Area[], offset: number, length: number): void => {
    const last = list[list.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else list.push({ offset, length });
  };
  for (let offset = 0; offset < snapshot.size;) {
    const { areas, covered } = await snapshot.queryChangedDiskAreas(offset);
    for (const area of areas) {
      const end = area.offset + area.length;
      for (let at = area.offset; at < end;) {
        const extents = (await reader.blockStatus(at, Math.min(ALLOC_SPAN, end - at))).get(
          'base:allocation',
        );
        if (!extents?.length) throw new Error(`no allocation extents at offset ${at}`);
        for (const e of extents) {
          if (at >= end) break;
          const n = Math.min(e.length, end - at);
          if (n <= 0) throw new Error(`empty allocation extent at offset ${at}`);
          if (e.flags & AllocationFlag.ZERO) push(plan.zero, at, n);
          else {
            push(plan.data, at, n);
            plan.dataBytes += n;
          }
          at += n;
        }
      }
    }
    if (covered <= offset) throw new Error(`changed areas did not advance past ${offset}`);
    offset = covered;
  }
  return plan;
}

/** Extents that may finish ahead of the first unfinished one, per worker. */
const REORDER_WINDOW = 4;

interface Work extends Area {
  zero: boolean;
}

/** The plan's data as `size`-byte chunks and its zero ranges, merged in offset order. */
function* work(plan: CopyPlan, size: number): Generator<Work> {
  let z = 0;
  const zeroesBefore = function* (offset: number): Generator<Work> {
    for (; z < plan.zero.length && (plan.zero[z] as Area).offset < offset; z++)
      yield { ...(plan.zero[z] as Area), zero: true };
  };
  for (const a of plan.data) {
    yield* zeroesBefore(a.offset);
    for (let at = a.offset; at < a.offset + a.length; at += size)
      yield { offset: at, length: Math.min(size, a.offset + a.length - at), zero: false };
  }
  yield* zeroesBefore(Infinity);
}

/**
 * Copies a plan from `reader` to `writer`: data chunks with several in flight, zero ranges as
 * WRITE_ZEROES when `writeZeroes` (an overlay must hide its backing file's old data). Every
 * written extent goes to `onWritten`, in offset order, for the manifest; memory stays that of
 * the chunks in flight whatever the size of the disk.
 */
export async function copyPlan(
  plan: CopyPlan,
  reader: NbdClient,
  writer: NbdClient,
  writeZeroes: boolean,
  options: CopyOptions = {},
): Promise<void> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
  const inFlight = options.inFlight ?? DEFAULT_IN_FLIGHT;
  const window = inFlight * REORDER_WINDOW;
  let done = 0;
  const queue = work(plan, chunkSize);
  let failed = false;
  const digester = await createDigester();
  // Extents are numbered as they are taken; finished ones wait in `finished` until every one
  // before them has been told, and no worker takes one more than `window` ahead.
  let taken = 0;
  let told = 0;
  const finished = new Map<number, WrittenExtent>();
  let telling = false;
  let waiting: Array<() => void> = [];
  const wake = (): void => {
    const w = waiting;
    waiting = [];
    for (const r of w) r();
  };
  const tell = async (): Promise<void> => {
    if (telling) return; // the worker already telling takes this one too
    telling = true;
    try {
      for (let e = finished.get(told); e; e = finished.get(told)) {
        finished.delete(told);
        told++;
        await options.onWritten?.(e);
        wake();
      }
    } finally {
      telling = false;
    }
  };
  // A token bucket shared by the workers: each chunk reserves its slot in time.
  let nextSlot = performance.now();
  const throttle = async (bytes: number): Promise<void> => {
    const rate = options.maxBytesPerSecond;
    if (!rate) return;
    const now = performance.now();
    const at = Math.max(now, nextSlot);
    nextSlot = at + (bytes / rate) * 1000;
    if (at > now) await new Promise((r) => setTimeout(r, at - now));
  };
  const worker = async (): Promise<void> => {
    // Each worker reuses one buffer: no allocation (and no garbage) per chunk.
    const buffer = Buffer.allocUnsafe(chunkSize);
    try {
      for (;;) {
        while (!failed && taken >= told + window) await new Promise<void>((r) => waiting.push(r));
        const next = failed ? undefined : queue.next();
        if (!next || next.done) return;
        const seq = taken++;
        options.signal?.throwIfAborted();
        const { offset, length, zero } = next.value;
        if (zero) {
          if (writeZeroes) await writer.writeZeroes(offset, length);
          finished.set(seq, { offset, length });
        } else {
          await throttle(length);
          const data = await reader.readInto(offset, buffer.subarray(0, length));
          const digest = digester.digest(data);
          await writer.write(offset, data);
          finished.set(seq, { offset, length, digest });
          done += length;
          options.onProgress?.(done);
        }
        await tell();
      }
    } catch (err) {
      failed = true;
      wake();
      throw err;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  // Every worker is done, so the one telling has told everything finished.
  if (finished.size > 0 || told !== taken)
    throw new Error(`copy ended with ${taken - told} extent(s) not reported`);
}
