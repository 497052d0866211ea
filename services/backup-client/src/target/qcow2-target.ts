import { existsSync } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ClientError } from '../errors';
import type { NbdClient } from '../nbd/index';
import { createQcow2, imageInfo, serveImage, type NbdExport } from '../qemu/image';
import { ToolError } from '../qemu/process';
import { partialPath } from '../protocol';
import { connectWithRetry } from '../source/nbd-areas';

/**
 * - `new`: a fresh image (full backup, first replication, a disk new to an incremental job);
 * - `overlay`: an incremental backup, a new image whose backing file is the parent's;
 * - `in-place`: a replication update of the existing replica.
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

/** fsyncs a file or a directory (after a rename into it). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * A target being written through a writable qemu-nbd export. New images are written under
 * `<path>.partial` and renamed into place only after everything is flushed, so a failed or
 * interrupted job never leaves a file that looks like a backup.
 */
export class Qcow2Target {
  private finished = false;

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

  static async open(spec: TargetSpec, size: number, workDir: string): Promise<Qcow2Target> {
    const writePath = spec.kind === 'in-place' ? spec.path : partialPath(spec.path);
    if (spec.kind !== 'in-place') {
      await mkdir(dirname(spec.path), { recursive: true });
      await rm(writePath, { force: true }); // a leftover of an interrupted run of ours
      await createQcow2(writePath, size, spec.kind === 'overlay' ? spec.backingPath : null).catch(
        (e: unknown) => {
          throw targetError(`cannot create ${writePath}`, e);
        },
      );
    }
    let exported: NbdExport | undefined;
    try {
      exported = await serveImage({ image: writePath, socketDir: workDir, readOnly: false });
      const writer = await connectWithRetry(exported.address, { exportName: exported.exportName });
      return new Qcow2Target(spec, writePath, exported, writer);
    } catch (e) {
      await exported?.server.stop();
      if (spec.kind !== 'in-place') await rm(writePath, { force: true });
      throw targetError(`cannot serve ${writePath}`, e);
    }
  }

  /** Flushes, stops the export and moves a new file into place (fsynced with its directory). */
  async finish(): Promise<void> {
    await this.writer.flush();
    await this.writer.disconnect();
    await this.exported.server.stop();
    if (this.exported.server.process.exitCode !== 0)
      throw new ClientError(
        'COPY_FAILED',
        `qemu-nbd serving ${this.writePath} exited with ${this.exported.server.process.exitCode}: ${this.exported.server.stderr().trim()}`,
        true,
      );
    if (this.writePath !== this.spec.path) {
      await fsyncPath(this.writePath);
      await rename(this.writePath, this.spec.path);
      await fsyncPath(dirname(this.spec.path));
    }
    this.finished = true;
  }

  /** Stops writing; a new file is removed. An in-place replica keeps what was written. */
  async abort(): Promise<void> {
    if (this.finished) return;
    await this.writer.disconnect().catch(() => undefined);
    await this.exported.server.stop();
    if (this.writePath !== this.spec.path) await rm(this.writePath, { force: true });
  }
}
