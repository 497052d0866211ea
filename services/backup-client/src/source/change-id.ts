import { createHash, randomUUID } from 'node:crypto';
import { FullBackupRequiredError } from '../errors';

/** A change_id of the qemu driver: `<disk uuid>/<sequence>`, VMware's shape. */
export interface QemuChangeId {
  uuid: string;
  seq: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** `tidemark.<chain>.<uuid>.<seq>`, or the chainless `tidemark.<uuid>.<seq>` of before chains. */
const BITMAP = /^tidemark\.(?:([a-z0-9]{1,32})\.)?([0-9a-f-]{36})\.(\d{1,15})$/;
const CHAIN = /^[a-z0-9]{1,32}$/;

export function parseChangeId(changeId: string): QemuChangeId | null {
  const slash = changeId.lastIndexOf('/');
  if (slash < 0) return null;
  const uuid = changeId.slice(0, slash);
  const seqText = changeId.slice(slash + 1);
  if (!UUID.test(uuid) || !/^\d{1,15}$/.test(seqText)) return null;
  return { uuid, seq: Number(seqText) };
}

export function formatChangeId(id: QemuChangeId): string {
  return `${id.uuid}/${id.seq}`;
}

/**
 * The chain a job belongs to, as a bitmap-name token: the backups of a VM into one repository
 * are one chain, its replications into one repository another. Each chain owns its own bitmaps
 * on every disk, so no job of one chain can remove what another chain's next incremental needs.
 */
export function chainTag(jobType: 'backup' | 'replication', repositoryId: string): string {
  const digest = createHash('sha256').update(repositoryId).digest('hex').slice(0, 16);
  return `${jobType === 'backup' ? 'b' : 'r'}${digest}`;
}

/** The persistent dirty bitmap of `chain` that tracks changes from change_id `id` on. */
export function bitmapName(chain: string, id: QemuChangeId): string {
  if (!CHAIN.test(chain)) throw new TypeError(`not a chain tag: "${chain}"`);
  return `tidemark.${chain}.${id.uuid}.${id.seq}`;
}

/** Our bitmap's chain (null for a bitmap made before chains) and change_id; null if not ours. */
export function parseBitmapName(name: string): { chain: string | null; id: QemuChangeId } | null {
  const m = BITMAP.exec(name);
  if (!m || !UUID.test(m[2] as string)) return null;
  return { chain: m[1] ?? null, id: { uuid: m[2] as string, seq: Number(m[3]) } };
}

export function newDiskUuid(): string {
  return randomUUID();
}

export interface TrackedBitmap {
  id: QemuChangeId;
  name: string;
  /** Left "in-use" by a process that did not close the image: its contents cannot be trusted. */
  inconsistent: boolean;
}

/**
 * What a rotation does, decided from the bitmaps on the disk (pure, so both the offline and the
 * live driver follow the same rules). `mine` are the chain's own bitmaps; `all` every bitmap of
 * ours on the disk, any chain (sequences count on across chains, so a change_id names one
 * bitmap of the disk, and a full keeps the disk's uuid):
 * - full (`previous` null): keep the disk uuid if the disk has one, next sequence after all;
 * - incremental: the previous bitmap must exist and be consistent; bitmaps of the same chain
 *   made after it (left by a failed job) are merged into it first, because together they hold
 *   every change since the previous change_id.
 */
export function planRotation(
  mine: TrackedBitmap[],
  previous: QemuChangeId | null,
  all: TrackedBitmap[] = mine,
): { next: QemuChangeId; base: TrackedBitmap | null; mergeIntoBase: TrackedBitmap[] } | string {
  const nextSeq = (uuid: string) =>
    Math.max(0, ...all.filter((b) => b.id.uuid === uuid).map((b) => b.id.seq)) + 1;
  if (previous === null) {
    const uuids = new Set(all.map((b) => b.id.uuid));
    const uuid = uuids.size === 1 ? ([...uuids][0] as string) : newDiskUuid();
    return { next: { uuid, seq: nextSeq(uuid) }, base: null, mergeIntoBase: [] };
  }
  const same = mine.filter((b) => b.id.uuid === previous.uuid);
  if (same.length === 0)
    return `no bitmap of disk ${previous.uuid} is on the source for this chain (the disk was replaced or its tracking was reset)`;
  const base = same.find((b) => b.id.seq === previous.seq);
  if (!base) return `the bitmap of change_id ${formatChangeId(previous)} is not on the source`;
  if (base.inconsistent)
    return `the bitmap of change_id ${formatChangeId(previous)} is inconsistent (a process holding the image did not close it)`;
  const later = same.filter((b) => b.id.seq > previous.seq);
  const bad = later.find((b) => b.inconsistent);
  if (bad)
    return `bitmap ${bad.name}, made after change_id ${formatChangeId(previous)}, is inconsistent`;
  return { next: { uuid: previous.uuid, seq: nextSeq(previous.uuid) }, base, mergeIntoBase: later };
}

export interface Rotation {
  next: QemuChangeId;
  /** Name of the new bitmap: the chain's tracking from this point on. */
  nextName: string;
  base: TrackedBitmap | null;
  mergeIntoBase: TrackedBitmap[];
  /**
   * Bitmaps no chain needs once the job's completion is recorded: this chain's own others, the
   * chainless bitmap it took over as its base, and of `chainHeads`' chains only what their
   * heads have superseded (lower sequences of the same disk uuid) and chainless bitmaps no head
   * names. Another chain's head, or anything newer of it (a job of it running now), never.
   */
  stale: TrackedBitmap[];
}

/**
 * The rotation of one source for one chain, from the bitmaps on it (ours are picked out by
 * name), or the typed "full backup required" naming the source. Both qemu drivers start here.
 * A bitmap made before chains (`tidemark.<uuid>.<seq>`) is taken over by the chain whose
 * previous change_id it is; one no chain names is left alone.
 */
export function rotationFor(
  source: string,
  bitmaps: Array<{ name: string; inconsistent: boolean }>,
  previousChangeId: string | null,
  chain: string,
  chainHeads: Array<{ chain: string; changeId: string }> = [],
): Rotation {
  const all: TrackedBitmap[] = [];
  const mine: TrackedBitmap[] = [];
  const chainless: TrackedBitmap[] = [];
  const superseded: TrackedBitmap[] = [];
  const heads = chainHeads.flatMap((h) => {
    const id = parseChangeId(h.changeId);
    return id ? [{ chain: h.chain, id }] : [];
  });
  for (const b of bitmaps) {
    const parsed = parseBitmapName(b.name);
    if (!parsed) continue;
    const tracked = { id: parsed.id, name: b.name, inconsistent: b.inconsistent };
    all.push(tracked);
    if (parsed.chain === chain) mine.push(tracked);
    else if (parsed.chain === null) chainless.push(tracked);
    else if (
      heads.some(
        (h) => h.chain === parsed.chain && h.id.uuid === parsed.id.uuid && parsed.id.seq < h.id.seq,
      )
    )
      // (this chain's own are all in `mine`)
      superseded.push(tracked);
  }
  let previous: QemuChangeId | null = null;
  if (previousChangeId !== null && previousChangeId !== '*') {
    previous = parseChangeId(previousChangeId);
    if (!previous)
      throw new FullBackupRequiredError(
        `source ${source}: change_id "${previousChangeId}" was not made by this driver (expected <disk uuid>/<sequence>)`,
        previousChangeId,
      );
    const p = previous;
    const adopted = chainless.find((b) => b.id.uuid === p.uuid && b.id.seq === p.seq);
    if (adopted && !mine.some((b) => b.id.uuid === p.uuid && b.id.seq === p.seq))
      mine.push(adopted);
  }
  const plan = planRotation(mine, previous, all);
  if (typeof plan === 'string')
    throw new FullBackupRequiredError(`source ${source}: ${plan}`, previousChangeId);
  const nextName = bitmapName(chain, plan.next);
  // A chainless bitmap no head names (one this chain took over as its base is already mine);
  // with no heads given nothing is known of the other chains, and nothing of theirs goes.
  const unnamed =
    heads.length === 0
      ? []
      : chainless.filter(
          (b) =>
            !mine.includes(b) &&
            !heads.some((h) => h.id.uuid === b.id.uuid && h.id.seq === b.id.seq),
        );
  return {
    ...plan,
    nextName,
    // Bitmaps merged into the base are removed as they are merged, before the copy.
    stale: [
      ...mine.filter((b) => b.name !== nextName && !plan.mergeIntoBase.includes(b)),
      ...superseded,
      ...unnamed,
    ],
  };
}
