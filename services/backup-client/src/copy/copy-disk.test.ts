import type { NbdClient } from '../nbd/index';
import { seededRandom } from './canary';
import { copyPlan, type CopyPlan, type WrittenExtent } from './copy-disk';

const KiB = 1024;
const CHUNK = 64 * KiB;

/** Reader and writer that answer after random delays, so requests finish out of order. */
function fakes(seed: number): { reader: NbdClient; writer: NbdClient; zeroed: number[] } {
  const random = seededRandom(seed);
  const later = (): Promise<void> => new Promise((r) => setTimeout(r, Math.floor(random() * 4)));
  const zeroed: number[] = [];
  const reader = {
    async readInto(offset: number, target: Buffer): Promise<Buffer> {
      await later();
      target.fill(offset % 251);
      return target;
    },
  };
  const writer = {
    async write(): Promise<void> {
      await later();
    },
    async writeZeroes(offset: number): Promise<void> {
      await later();
      zeroed.push(offset);
    },
  };
  return { reader: reader as unknown as NbdClient, writer: writer as unknown as NbdClient, zeroed };
}

describe('copyPlan tells the manifest every written extent', () => {
  it('given chunks that finish out of order, then each is told once, in offset order, with at most a window of them held', async () => {
    const plan: CopyPlan = {
      data: [
        { offset: 0, length: 40 * CHUNK + 100 },
        { offset: 50 * CHUNK, length: 3 * KiB },
        { offset: 80 * CHUNK, length: 200 * CHUNK },
      ],
      zero: [
        { offset: 41 * CHUNK, length: 9 * CHUNK },
        { offset: 60 * CHUNK, length: 20 * CHUNK },
        { offset: 300 * CHUNK, length: 1 * CHUNK },
      ],
      dataBytes: 0,
    };
    const { reader, writer, zeroed } = fakes(3);
    const told: WrittenExtent[] = [];
    let progress = 0;
    await copyPlan(plan, reader, writer, true, {
      chunkSize: CHUNK,
      inFlight: 8,
      onProgress: (n) => (progress = n),
      onWritten: async (e) => {
        told.push(e);
        if (told.length % 7 === 0) await new Promise((r) => setTimeout(r, 2)); // a slow writer
      },
    });
    const expected: WrittenExtent[] = [];
    for (let at = 0; at < 40 * CHUNK + 100; at += CHUNK)
      expected.push({ offset: at, length: Math.min(CHUNK, 40 * CHUNK + 100 - at) });
    expected.push({ offset: 41 * CHUNK, length: 9 * CHUNK });
    expected.push({ offset: 50 * CHUNK, length: 3 * KiB });
    expected.push({ offset: 60 * CHUNK, length: 20 * CHUNK });
    for (let at = 80 * CHUNK; at < 280 * CHUNK; at += CHUNK)
      expected.push({ offset: at, length: CHUNK });
    expected.push({ offset: 300 * CHUNK, length: 1 * CHUNK });
    expect(told.map(({ offset, length }) => ({ offset, length }))).toEqual(expected);
    // Data extents carry a digest, zero ranges none.
    const zeroOffsets = new Set([41, 60, 300].map((c) => c * CHUNK));
    for (const e of told) expect(e.digest === undefined).toBe(zeroOffsets.has(e.offset));
    expect([...zeroed].sort((a, b) => a - b)).toEqual([...zeroOffsets]);
    expect(progress).toBe(40 * CHUNK + 100 + 3 * KiB + 200 * CHUNK);
  });

  it('given an extent that stalls, then no worker runs more than the window ahead of it', async () => {
    const plan: CopyPlan = { data: [{ offset: 0, length: 1000 * CHUNK }], zero: [], dataBytes: 0 };
    let started = 0;
    let releaseFirst: () => void = () => undefined;
    const reader = {
      async readInto(offset: number, target: Buffer): Promise<Buffer> {
        started++;
        if (offset === 0) await new Promise<void>((r) => (releaseFirst = r));
        return target;
      },
    } as unknown as NbdClient;
    const writer = { write: async () => undefined } as unknown as NbdClient;
    const told: number[] = [];
    const copy = copyPlan(plan, reader, writer, false, {
      chunkSize: CHUNK,
      inFlight: 4,
      onWritten: (e) => void told.push(e.offset),
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(told).toEqual([]);
    expect(started).toBe(16); // inFlight × REORDER_WINDOW taken while the first one stalls
    releaseFirst();
    await copy;
    expect(told).toHaveLength(1000);
  });

  it('given a failing write, then the copy fails and stops taking work', async () => {
    const plan: CopyPlan = { data: [{ offset: 0, length: 100 * CHUNK }], zero: [], dataBytes: 0 };
    let reads = 0;
    const reader = {
      async readInto(_offset: number, target: Buffer): Promise<Buffer> {
        reads++;
        return target;
      },
    } as unknown as NbdClient;
    const writer = {
      async write(offset: number): Promise<void> {
        if (offset === 5 * CHUNK) throw new Error('disk full');
      },
    } as unknown as NbdClient;
    await expect(
      copyPlan(plan, reader, writer, false, { chunkSize: CHUNK, inFlight: 4 }),
    ).rejects.toThrow('disk full');
    await new Promise((r) => setTimeout(r, 20));
    expect(reads).toBeLessThan(20);
  });
});
