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

function* chunks(areas: Area[], size: number): Generator<Area> {
  for (const a of areas) {
    for (let at = a.offset; at < a.offset + a.length; at += size)
      yield { offset: at, length: Math.min(size, a.offset + a.length - at) };
  }
}

/**
 * Copies a plan from `reader` to `writer`: data chunks with several in flight, zero ranges as
 * WRITE_ZEROES when `writeZeroes` (an overlay must hide its backing file's old data). Returns
 * every written extent, in offset order, for the manifest.
 */
export async function copyPlan(
  plan: CopyPlan,
  reader: NbdClient,
  writer: NbdClient,
  writeZeroes: boolean,
  options: CopyOptions = {},
): Promise<WrittenExtent[]> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
  const inFlight = options.inFlight ?? DEFAULT_IN_FLIGHT;
  const written: WrittenExtent[] = [];
  let done = 0;
  const queue = chunks(plan.data, chunkSize);
  let failed = false;
  const digester = await createDigester();
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
    for (let next = queue.next(); !next.done && !failed; next = queue.next()) {
      options.signal?.throwIfAborted();
      const { offset, length } = next.value;
      try {
        await throttle(length);
        const data = await reader.readInto(offset, buffer.subarray(0, length));
        const digest = digester.digest(data);
        await writer.write(offset, data);
        written.push({ offset, length, digest });
        done += length;
        options.onProgress?.(done);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const zeroes = async (): Promise<void> => {
    for (const z of plan.zero) {
      options.signal?.throwIfAborted();
      if (writeZeroes) await writer.writeZeroes(z.offset, z.length);
      written.push({ offset: z.offset, length: z.length });
    }
  };
  await Promise.all([...Array.from({ length: inFlight }, worker), zeroes()]);
  written.sort((a, b) => a.offset - b.offset);
  return written;
}
