import { existsSync } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { ClientError } from '../errors';
import type { NbdClient } from '../nbd/index';
import {
  commitOverlay,
  createQcow2,
  imageInfo,
  imageMap,
  serveImage,
  type NbdExport,
} from '../qemu/image';
import { ToolError } from '../qemu/process';
import { manifestPath, partialPath } from '../protocol';
import { connectWithRetry } from '../source/nbd-areas';
import {
  freeBytes,
  isNoSpace,
  qcow2Overhead,
  releaseTail,
  repositoryFull,
  reserveTail,
} from './space';

/**
 * - `new`: a fresh image (full backup, first replication, a disk new to an incremental job);
 * - `overlay`: an incremental backup, a new image whose backing file is the parent's;
 * - `in-place`: a replication update of the existing replica: written into an overlay over the
 *   replica, committed into it only once the copy is flushed.
 */
export type TargetKind = 'new' | 'overlay' | 'in-place';

export interface TargetSpec {
  kind: TargetKind;
  path: string;
  backingPath: string | null;
  /** A full replication re-seeds the replica: the new file replaces the old one at the end. */
  replace?: boolean;
}

function targetError(message: string, cause?: unknown): ClientError {
  const detail = cause instanceof ToolError ? `: ${cause.stderr.trim()}` : '';
  return new ClientError('TARGET_INVALID', `${message}${detail}`, false, { cause });
}

/**
 * Checks a target before any source is touched, so a bad target costs no bitmap rotation.
 * Returns the size an overlay's backing file (or an in-place replica) has, if any.
 */
export async function checkTarget(spec: TargetSpec): Promise<number | null> {
  if (spec.kind === 'in-place') {
    if (!existsSync(spec.path))
      throw targetError(`target ${spec.path}: the replica to update does not exist`);
    // An update whose commit was stopped (a crash): finished first, so the replica is one point
    // in time again; this job's copy then brings it to the new one.
    if (existsSync(committingPath(spec.path)))
      await commitInto(committingPath(spec.path), spec.path).catch((e: unknown) => {
        if (e instanceof ClientError) throw e;
        throw targetError(`target ${spec.path}: the stopped commit of its last update failed`, e);
      });
    const info = await imageInfo(spec.path).catch((e: unknown) => {
      throw targetError(`target ${spec.path}: cannot be read`, e);
    });
    if (info.format !== 'qcow2') throw targetError(`target ${spec.path}: not a qcow2 image`);
    return info.virtualSize;
  }
  if (existsSync(spec.path) && !spec.replace)
    throw targetError(`target ${spec.path} already exists; a backup never overwrites a file`);
  if (spec.kind === 'overlay') {
    const backing = spec.backingPath as string;
    if (!existsSync(backing))
      throw targetError(`backing file ${backing} of target ${spec.path} does not exist`);
    const info = await imageInfo(backing, { shared: true }).catch((e: unknown) => {
      throw targetError(`backing file ${backing} cannot be read`, e);
    });
    if (info.format !== 'qcow2') throw targetError(`backing file ${backing}: not a qcow2 image`);
    return info.virtualSize;
  }
  return null;
}

/**
 * Where a replica's update waits while it is committed: an overlay found under this name means
 * its commit was stopped half-way, and the replica reads as one point in time only with it.
 */
export function committingPath(replica: string): string {
  return `${replica}.committing`;
}

/** fsyncs a file or a directory (after a rename into it). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Runs `step`; a disk-full failure of it becomes REPOSITORY_FULL naming `dir`. */
async function noSpaceAs<T>(dir: string, what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (isNoSpace(err)) throw await repositoryFull(dir, what, err);
    throw err;
  }
}

/**
 * The most committing `overlay` can add to its backing file: every cluster the overlay holds
 * (as if none were allocated in the backing file yet), an L2 table for each L2 range they
 * touch, and the refcount metadata `qcow2Overhead` allows.
 */
async function commitNeed(overlay: string): Promise<number> {
  const info = await imageInfo(overlay);
  const cluster = info.clusterSize ?? 64 * 1024;
  const l2Range = (cluster * cluster) / 8;
  let data = 0;
  const l2 = new Set<number>();
  for (const e of await imageMap(overlay)) {
    if (e.depth !== 0) continue;
    const first = Math.floor(e.start / cluster) * cluster;
    const end = Math.ceil((e.start + e.length) / cluster) * cluster;
    data += end - first;
    for (let r = Math.floor(first / l2Range); r * l2Range < end; r++) l2.add(r);
  }
  return data + l2.size * cluster + qcow2Overhead(0, data, cluster);
}

/**
 * Commits a flushed overlay into its replica and removes it. Space first: what the commit can
 * add to the replica is reserved past its end (`fallocate --keep-size`), so the commit writes
 * only into blocks it holds and cannot fail for space half-way; without that space the commit
 * never starts (REPOSITORY_FULL) and the replica stays as it was. `rename` moves the overlay
 * to `committingPath` before the replica is touched, so a stop in the middle is known.
 */
async function commitInto(overlay: string, replica: string, onCommitted?: () => Promise<void>) {
  const dir = dirname(replica);
  const committing = committingPath(replica);
  const need = await commitNeed(overlay);
  const { size } = await stat(replica);
  const reserved = await reserveTail(replica, size, need, dir);
  if (!reserved) {
    const free = await freeBytes(dir);
    if (free !== null && free < need)
      throw await repositoryFull(dir, `committing the update into ${replica} needs ${need}`);
  }
  const release = async () => {
    if (!reserved) return;
    const now = (await stat(replica)).size;
    await releaseTail(replica, now, size + need - now);
  };
  try {
    if (overlay !== committing) {
      await rename(overlay, committing);
      await fsyncPath(dir);
    }
    await noSpaceAs(dir, `the commit into ${replica} stopped; ${committing} holds the update`, () =>
      commitOverlay(committing),
    );
    await fsyncPath(replica);
  } finally {
    await release().catch(() => undefined);
  }
  await onCommitted?.();
  await rm(committing, { force: true });
  await fsyncPath(dir);
}

/**
 * A target being written through a writable qemu-nbd export. New images are written under
 * `<path>.partial` and renamed into place only after everything is flushed and their manifest
 * is written, so a failed or interrupted job never leaves a file that looks like a backup. A
 * replica's update is written into `<path>.partial`, an overlay over the replica, and committed
 * only after it is flushed: until then the replica is its last good point.
 */
export class Qcow2Target {
  private finished = false;
  /** Set once the overlay of an update is being committed: from then on it is kept on failure. */
  private committing = false;
  /** Set once the manifest of a new file is written, before the file is renamed. */
  private manifestWritten = false;

  private constructor(
    readonly spec: TargetSpec,
    private readonly writePath: string,
    private readonly exported: NbdExport,
    readonly writer: NbdClient,
  ) {}

  /** Whether a changed range that now reads as zero must be written (an overlay or a replica). */
  get needsZeroes(): boolean {
    return this.spec.kind !== 'new';
  }

  /** The directory written into: the repository's, named in a REPOSITORY_FULL failure. */
  get dir(): string {
    return dirname(this.spec.path);
  }

  static async open(spec: TargetSpec, size: number, workDir: string): Promise<Qcow2Target> {
    const writePath = partialPath(spec.path);
    const dir = dirname(spec.path);
    await mkdir(dir, { recursive: true });
    await rm(writePath, { force: true }); // a leftover of an interrupted run of ours
    const backing =
      spec.kind === 'overlay'
        ? spec.backingPath
        : spec.kind === 'in-place'
          ? resolve(spec.path)
          : null;
    await noSpaceAs(dir, `cannot create ${writePath}`, () =>
      createQcow2(writePath, size, backing),
    ).catch(async (e: unknown) => {
      await rm(writePath, { force: true });
      if (e instanceof ClientError) throw e;
      throw targetError(`cannot create ${writePath}`, e);
    });
    let exported: NbdExport | undefined;
    try {
      exported = await serveImage({ image: writePath, socketDir: workDir, readOnly: false });
      const writer = await connectWithRetry(exported.address, { exportName: exported.exportName });
      return new Qcow2Target(spec, writePath, exported, writer);
    } catch (e) {
      await exported?.server.stop();
      await rm(writePath, { force: true });
      throw targetError(`cannot serve ${writePath}`, e);
    }
  }

  /**
   * Flushes and stops the export, then makes the copy the target: a new file gets its manifest
   * (`writeManifest`, written and fsynced) and is renamed into place, fsynced with its
   * directory; a replica's update is committed into it, then its manifest is written. A full
   * replication's new file replaces the replica first, its manifest after.
   */
  async finish(writeManifest: () => Promise<void>): Promise<void> {
    const dir = this.dir;
    await noSpaceAs(dir, `flushing ${this.writePath} failed`, () => this.writer.flush());
    await this.writer.disconnect();
    await this.exported.server.stop();
    if (this.exported.server.process.exitCode !== 0) {
      const stderr = this.exported.server.stderr().trim();
      const message = `qemu-nbd serving ${this.writePath} exited with ${this.exported.server.process.exitCode}: ${stderr}`;
      if (isNoSpace(new Error(stderr))) throw await repositoryFull(dir, message);
      throw new ClientError('COPY_FAILED', message, true);
    }
    await noSpaceAs(dir, `syncing ${this.writePath} failed`, () => fsyncPath(this.writePath));
    if (this.spec.kind === 'in-place') {
      this.committing = true;
      await commitInto(this.writePath, this.spec.path, () =>
        noSpaceAs(dir, `the manifest of ${this.spec.path} cannot be written`, writeManifest),
      );
    } else if (this.spec.replace) {
      await rename(this.writePath, this.spec.path);
      await fsyncPath(dir);
      await noSpaceAs(dir, `the manifest of ${this.spec.path} cannot be written`, writeManifest);
    } else {
      this.manifestWritten = true;
      await noSpaceAs(dir, `the manifest of ${this.spec.path} cannot be written`, writeManifest);
      await rename(this.writePath, this.spec.path);
      await fsyncPath(dir);
    }
    this.finished = true;
  }

  /**
   * Stops writing and removes what this copy wrote (the new file, or the replica's uncommitted
   * update, with the manifest of a new file). An update whose commit had started is kept as
   * `committingPath`: the next update finishes it.
   */
  async abort(): Promise<void> {
    if (this.finished) return;
    await this.writer.disconnect().catch(() => undefined);
    await this.exported.server.stop();
    const committed = this.committing && existsSync(committingPath(this.spec.path));
    if (!committed) await rm(this.writePath, { force: true });
    if (this.manifestWritten) await rm(manifestPath(this.spec.path), { force: true });
  }
}
