import { sampleUnchanged, seededRandom } from './canary';

const K64 = 64 * 1024;
const MiB = 1024 * 1024;

describe('the CBT canary picks blocks the tracking calls unchanged', () => {
  it('given changed areas, when it samples, then every block lies wholly outside them, aligned and distinct', () => {
    const changed = [
      { offset: 0, length: 3 * K64 + 100 },
      { offset: 10 * K64, length: K64 },
      { offset: 20 * K64 + 7, length: 2 },
    ];
    const offsets = sampleUnchanged(32 * K64, changed, 1000, K64, seededRandom(1));
    // Unchanged whole blocks: 4..9, 11..19, 21..31 (block 20 holds a changed byte).
    const expected = [
      ...[4, 5, 6, 7, 8, 9],
      ...[11, 12, 13, 14, 15, 16, 17, 18, 19],
      ...[21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31],
    ].map((b) => b * K64);
    expect(offsets).toEqual(expected);
  });

  it('given a seed, then the same blocks come again; another seed gives others', () => {
    const a = sampleUnchanged(1024 * MiB, [], 64, K64, seededRandom(7));
    expect(sampleUnchanged(1024 * MiB, [], 64, K64, seededRandom(7))).toEqual(a);
    expect(sampleUnchanged(1024 * MiB, [], 64, K64, seededRandom(8))).not.toEqual(a);
    expect(a).toHaveLength(64);
    expect(new Set(a).size).toBe(64);
    expect([...a].sort((x, y) => x - y)).toEqual(a);
  });

  it('given a disk all changed, or smaller than a block, then there is nothing to sample', () => {
    expect(
      sampleUnchanged(8 * K64, [{ offset: 0, length: 8 * K64 }], 64, K64, Math.random),
    ).toEqual([]);
    expect(sampleUnchanged(K64 - 512, [], 64, K64, Math.random)).toEqual([]);
  });

  it('samples uniformly: each half of the unchanged blocks gets about half of the picks', () => {
    const random = seededRandom(42);
    let low = 0;
    const trials = 200;
    for (let i = 0; i < trials; i++)
      for (const o of sampleUnchanged(64 * MiB, [{ offset: 0, length: MiB }], 16, K64, random))
        if (o < 32 * MiB + MiB / 2) low++;
    // 1008 unchanged blocks, 504 on each side of the midpoint; 3200 picks.
    expect(low / (trials * 16)).toBeGreaterThan(0.45);
    expect(low / (trials * 16)).toBeLessThan(0.55);
  });
});
