import { randomUUID } from 'node:crypto';
import { FullBackupRequiredError } from '../errors';

/** A change_id of the qemu driver: `<disk uuid>/<sequence>`, VMware's shape. */
export interface QemuChangeId {
  uuid: string;
  seq: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BITMAP = /^tidemark\.([0-9a-f-]{36})\.(\d{1,15})$/;

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

/** The persistent dirty bitmap that tracks changes from change_id `id` on. */
export function bitmapName(id: QemuChangeId): string {
  return `tidemark.${id.uuid}.${id.seq}`;
}

export function parseBitmapName(name: string): QemuChangeId | null {
  const m = BITMAP.exec(name);
  if (!m || !UUID.test(m[1] as string)) return null;
  return { uuid: m[1] as string, seq: Number(m[2]) };
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
 * live driver follow the same rules):
 * - full (`previous` null): keep the disk uuid if the disk has one, next sequence after all;
 * - incremental: the previous bitmap must exist and be consistent; bitmaps of the same disk
 *   made after it (left by a failed job) are merged into it first, because together they hold
 *   every change since the previous change_id.
 */
export function planRotation(
  bitmaps: TrackedBitmap[],
  previous: QemuChangeId | null,
): { next: QemuChangeId; base: TrackedBitmap | null; mergeIntoBase: TrackedBitmap[] } | string {
  if (previous === null) {
    const uuids = new Set(bitmaps.map((b) => b.id.uuid));
    const uuid = uuids.size === 1 ? ([...uuids][0] as string) : newDiskUuid();
    const seq = Math.max(0, ...bitmaps.filter((b) => b.id.uuid === uuid).map((b) => b.id.seq)) + 1;
    return { next: { uuid, seq }, base: null, mergeIntoBase: [] };
  }
  const same = bitmaps.filter((b) => b.id.uuid === previous.uuid);
  if (same.length === 0)
    return `no bitmap of disk ${previous.uuid} is on the source (the disk was replaced or its tracking was reset)`;
  const base = same.find((b) => b.id.seq === previous.seq);
  if (!base) return `the bitmap of change_id ${formatChangeId(previous)} is not on the source`;
  if (base.inconsistent)
    return `the bitmap of change_id ${formatChangeId(previous)} is inconsistent (a process holding the image did not close it)`;
  const later = same.filter((b) => b.id.seq > previous.seq);
  const bad = later.find((b) => b.inconsistent);
  if (bad)
    return `bitmap ${bad.name}, made after change_id ${formatChangeId(previous)}, is inconsistent`;
  const seq = Math.max(...same.map((b) => b.id.seq)) + 1;
  return { next: { uuid: previous.uuid, seq }, base, mergeIntoBase: later };
}

export interface Rotation {
  next: QemuChangeId;
  base: TrackedBitmap | null;
  mergeIntoBase: TrackedBitmap[];
  /** Our bitmaps other than the next one: removed once the job succeeded. */
  stale: TrackedBitmap[];
}

/**
 * The rotation of one source, from the bitmaps on it (ours are picked out by name), or the
 * typed "full backup required" naming the source. Both qemu drivers start here.
 */
export function rotationFor(
  source: string,
  bitmaps: Array<{ name: string; inconsistent: boolean }>,
  previousChangeId: string | null,
): Rotation {
  const tracked: TrackedBitmap[] = [];
  for (const b of bitmaps) {
    const id = parseBitmapName(b.name);
    if (id) tracked.push({ id, name: b.name, inconsistent: b.inconsistent });
  }
  let previous: QemuChangeId | null = null;
  if (previousChangeId !== null && previousChangeId !== '*') {
    previous = parseChangeId(previousChangeId);
    if (!previous)
      throw new FullBackupRequiredError(
        `source ${source}: change_id "${previousChangeId}" was not made by this driver (expected <disk uuid>/<sequence>)`,
        previousChangeId,
      );
  }
  const plan = planRotation(tracked, previous);
  if (typeof plan === 'string')
    throw new FullBackupRequiredError(`source ${source}: ${plan}`, previousChangeId);
  const nextName = bitmapName(plan.next);
  return { ...plan, stale: tracked.filter((b) => b.name !== nextName) };
}
