import { FullBackupRequiredError } from '../errors';
import {
  bitmapName,
  chainTag,
  formatChangeId,
  parseBitmapName,
  parseChangeId,
  planRotation,
  rotationFor,
  type TrackedBitmap,
} from './change-id';

const uuid = '0b0c1e7a-5d2f-4c8e-9a41-3f6f1d2e7b90';
const other = '9f1e2d3c-4b5a-4c6d-8e7f-0a1b2c3d4e5f';
const chain = chainTag('backup', 'repo-1');
const tb = (u: string, seq: number, inconsistent = false, of = chain): TrackedBitmap => ({
  id: { uuid: u, seq },
  name: bitmapName(of, { uuid: u, seq }),
  inconsistent,
});

describe('change ids and bitmap names', () => {
  it('round-trip', () => {
    const id = { uuid, seq: 42 };
    expect(parseChangeId(formatChangeId(id))).toEqual(id);
    expect(parseBitmapName(bitmapName(chain, id))).toEqual({ chain, id });
    // A bitmap made before chains: ours, of no chain.
    expect(parseBitmapName(`tidemark.${uuid}.42`)).toEqual({ chain: null, id });
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

describe('chains', () => {
  const backups = chainTag('backup', 'repo-1');
  const replicas = chainTag('replication', 'repo-1');
  const name = (of: string, seq: number) => bitmapName(of, { uuid, seq });
  const onDisk = (...names: string[]) => names.map((n) => ({ name: n, inconsistent: false }));

  it('are told apart by job kind and repository', () => {
    expect(new Set([backups, replicas, chainTag('backup', 'repo-2')]).size).toBe(3);
    expect(chainTag('backup', 'repo-1')).toBe(backups);
  });

  it("a job never removes another chain's bitmap: the replication keeps the backup chain's base", () => {
    // backup full made seq 1; replication full made seq 2; both are chain heads now.
    const bitmaps = onDisk(name(backups, 1), name(replicas, 2));
    const replication = rotationFor('d', bitmaps, `${uuid}/2`, replicas);
    expect(replication.next).toEqual({ uuid, seq: 3 });
    expect(replication.stale.map((b) => b.name)).toEqual([name(replicas, 2)]);
    const backup = rotationFor('d', bitmaps, `${uuid}/1`, backups);
    expect(backup.base?.name).toBe(name(backups, 1));
    expect(backup.stale.map((b) => b.name)).toEqual([name(backups, 1)]);
  });

  it("a full of one chain removes only that chain's old bitmaps, and keeps the disk uuid", () => {
    const plan = rotationFor('d', onDisk(name(backups, 4), name(replicas, 5)), null, backups);
    expect(plan.next).toEqual({ uuid, seq: 6 });
    expect(plan.stale.map((b) => b.name)).toEqual([name(backups, 4)]);
  });

  it("another chain's bitmap is never a base, even with the right change_id", () => {
    expect(() => rotationFor('d', onDisk(name(replicas, 2)), `${uuid}/2`, backups)).toThrow(
      FullBackupRequiredError,
    );
  });

  it("a failed job's later bitmap is merged only within its chain", () => {
    const plan = rotationFor(
      'd',
      onDisk(name(backups, 1), name(replicas, 2), name(backups, 3)),
      `${uuid}/1`,
      backups,
    );
    expect(plan.mergeIntoBase.map((b) => b.name)).toEqual([name(backups, 3)]);
    expect(plan.next.seq).toBe(4);
    // Merged (and removed) before the copy: not removed a second time at commit.
    expect(plan.stale.map((b) => b.name)).toEqual([name(backups, 1)]);
  });

  it('a bitmap of before chains is taken over by the chain whose change_id it is', () => {
    const legacy = `tidemark.${uuid}.7`;
    const plan = rotationFor('d', onDisk(legacy, `tidemark.${uuid}.6`), `${uuid}/7`, replicas);
    expect(plan.base?.name).toBe(legacy);
    expect(plan.nextName).toBe(name(replicas, 8));
    // The other chainless bitmap may be another chain's head: left alone.
    expect(plan.stale.map((b) => b.name)).toEqual([legacy]);
  });

  it("cleans up what other chains' heads have superseded, never their heads or what is newer", () => {
    // The replication's head is seq 5; 3 is superseded (its commit never ran), 7 belongs to a
    // replication running now. The chainless 2 is no head's; the chainless 4 is a backup head's.
    const bitmaps = onDisk(
      name(backups, 6),
      name(replicas, 3),
      name(replicas, 5),
      name(replicas, 7),
      `tidemark.${uuid}.2`,
      `tidemark.${uuid}.4`,
    );
    const heads = [
      { chain: replicas, changeId: `${uuid}/5` },
      { chain: chainTag('backup', 'repo-9'), changeId: `${uuid}/4` },
    ];
    const plan = rotationFor('d', bitmaps, `${uuid}/6`, backups, heads);
    expect(plan.stale.map((b) => b.name).sort()).toEqual(
      [name(backups, 6), name(replicas, 3), `tidemark.${uuid}.2`].sort(),
    );
    // Without the heads, nothing of other chains is touched.
    expect(rotationFor('d', bitmaps, `${uuid}/6`, backups).stale.map((b) => b.name)).toEqual([
      name(backups, 6),
    ]);
  });
});
