import {
  bitmapName,
  formatChangeId,
  parseBitmapName,
  parseChangeId,
  planRotation,
  type TrackedBitmap,
} from './change-id';

const uuid = '0b0c1e7a-5d2f-4c8e-9a41-3f6f1d2e7b90';
const other = '9f1e2d3c-4b5a-4c6d-8e7f-0a1b2c3d4e5f';
const tb = (u: string, seq: number, inconsistent = false): TrackedBitmap => ({
  id: { uuid: u, seq },
  name: bitmapName({ uuid: u, seq }),
  inconsistent,
});

describe('change ids and bitmap names', () => {
  it('round-trip', () => {
    const id = { uuid, seq: 42 };
    expect(parseChangeId(formatChangeId(id))).toEqual(id);
    expect(parseBitmapName(bitmapName(id))).toEqual(id);
  });

  it('reject what this driver did not make', () => {
    expect(parseChangeId('52 66 8c 2d a7 c5 c5 68-c5 d2 8d 04 79 f5 fd 7d/9999')).toBeNull();
    expect(parseChangeId(`${uuid}/`)).toBeNull();
    expect(parseChangeId(`${uuid}/-1`)).toBeNull();
    expect(parseChangeId(uuid)).toBeNull();
    expect(parseBitmapName('tidemark.not-a-uuid.1')).toBeNull();
    expect(parseBitmapName('my-own-bitmap')).toBeNull();
  });
});

describe('planRotation', () => {
  it('a first full backup gives the disk a new uuid and sequence 1', () => {
    const plan = planRotation([], null);
    expect(typeof plan).toBe('object');
    if (typeof plan === 'string') return;
    expect(plan.next.seq).toBe(1);
    expect(plan.base).toBeNull();
  });

  it('a full backup keeps the disk uuid and counts on', () => {
    const plan = planRotation([tb(uuid, 3), tb(uuid, 4, true)], null);
    expect(plan).toMatchObject({ next: { uuid, seq: 5 }, base: null, mergeIntoBase: [] });
  });

  it('an incremental rotates from the previous bitmap', () => {
    const plan = planRotation([tb(uuid, 3)], { uuid, seq: 3 });
    expect(plan).toMatchObject({ next: { uuid, seq: 4 }, base: tb(uuid, 3), mergeIntoBase: [] });
  });

  it('bitmaps a failed job left after the previous one are merged into it', () => {
    const plan = planRotation([tb(uuid, 2), tb(uuid, 3), tb(uuid, 4)], { uuid, seq: 3 });
    expect(plan).toMatchObject({ next: { uuid, seq: 5 }, base: tb(uuid, 3) });
    if (typeof plan !== 'string') expect(plan.mergeIntoBase).toEqual([tb(uuid, 4)]);
  });

  it.each([
    ['missing bitmap', [tb(uuid, 2)], /is not on the source/],
    ['another disk', [tb(other, 3)], /no bitmap of disk/],
    ['inconsistent base', [tb(uuid, 3, true)], /inconsistent/],
    ['inconsistent later bitmap', [tb(uuid, 3), tb(uuid, 4, true)], /made after .* inconsistent/],
  ])('%s → full backup required', (_what, bitmaps, reason) => {
    const plan = planRotation(bitmaps, { uuid, seq: 3 });
    expect(typeof plan).toBe('string');
    expect(plan).toMatch(reason);
  });
});
