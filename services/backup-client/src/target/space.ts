import { statfs } from 'node:fs/promises';
import { ClientError } from '../errors';
import { NbdError } from '../nbd/index';
import { runTool, ToolError } from '../qemu/process';

// Running out of space in a repository: recognising it, checking for it before a copy, and
// reserving what a replica's commit will need.

/** ENOSPC as NBD and Linux number it (EDQUOT, a quota's full, is told the same way). */
const ENOSPC = 28;
const NO_SPACE = /No space left on device|Disk quota exceeded/i;

/** Whether `err` (a Node fs error, an NBD reply, a qemu tool's stderr) says the disk is full. */
export function isNoSpace(err: unknown): boolean {
  for (let e = err; e; e = (e as { cause?: unknown }).cause) {
    if (e instanceof NbdError && e.errno === ENOSPC) return true;
    if (e instanceof ToolError && NO_SPACE.test(e.stderr)) return true;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') return true;
    if (e instanceof Error && NO_SPACE.test(e.message)) return true;
    if (!(e instanceof Error)) break;
  }
  return false;
}

/** What a disk-full failure said, with its errno named where NBD gave only the number. */
export function noSpaceMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return err instanceof NbdError && err.errnoName ? `${message} (${err.errnoName})` : message;
}

/** Bytes an unprivileged writer may still use on the filesystem of `dir`; null if unknown. */
export async function freeBytes(dir: string): Promise<number | null> {
  try {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

function describe(free: number | null): string {
  return free === null ? 'its free space unknown' : `${free} bytes free`;
}

/** The REPOSITORY_FULL failure for a write into `dir`, naming the path and its free bytes now. */
export async function repositoryFull(
  dir: string,
  what: string,
  cause?: unknown,
): Promise<ClientError> {
  const free = await freeBytes(dir);
  return new ClientError(
    'REPOSITORY_FULL',
    `repository full: ${dir} has ${describe(free)}; ${what}`,
    false,
    { cause },
  );
}

/**
 * The most a qcow2 file needs besides `dataBytes` of data clusters for a disk of `size` bytes:
 * an L2 table per `cluster² / 8` bytes of the disk, refcount blocks for the data (16-bit
 * refcounts), and 4 clusters for the header, L1 and refcount tables growing.
 */
export function qcow2Overhead(size: number, dataBytes: number, cluster = 64 * 1024): number {
  const l2Tables = Math.ceil(size / ((cluster * cluster) / 8));
  const refcountBlocks = Math.ceil((dataBytes + size / 64) / ((cluster * cluster) / 2)) + 1;
  return (l2Tables + refcountBlocks + 4) * cluster;
}

/**
 * The free-space rule of a copy: the repository must hold the data to be copied (the plan's
 * data extents, `dataBytes`, which the target stores cluster for cluster) plus its qcow2
 * metadata (`qcow2Overhead`). Refuses with REPOSITORY_FULL before a byte is written.
 */
export async function checkFreeSpace(
  dir: string,
  size: number,
  dataBytes: number,
  file: string,
): Promise<void> {
  const need = dataBytes + qcow2Overhead(size, dataBytes);
  const free = await freeBytes(dir);
  if (free !== null && free < need)
    throw new ClientError(
      'REPOSITORY_FULL',
      `repository full: ${dir} has ${free} bytes free; ${file} needs about ${need} (${dataBytes} bytes of data and its qcow2 metadata)`,
      false,
    );
}

/**
 * Reserves `length` bytes of blocks past the end of `file` without changing its size
 * (`fallocate --keep-size`): writes that later grow the file into them cannot run out of space.
 * Resolves false where the filesystem cannot preallocate (the caller then checks free space);
 * rejects with REPOSITORY_FULL when the space is not there.
 */
export async function reserveTail(
  file: string,
  offset: number,
  length: number,
  dir: string,
): Promise<boolean> {
  try {
    await runTool('fallocate', ['--keep-size', '-o', String(offset), '-l', String(length), file]);
    return true;
  } catch (err) {
    if (isNoSpace(err))
      throw await repositoryFull(dir, `${length} bytes cannot be reserved for ${file}`, err);
    if (err instanceof ToolError && /not supported/i.test(err.stderr)) return false;
    throw err;
  }
}

/** Gives back what `reserveTail` reserved and the file did not grow into. */
export async function releaseTail(file: string, offset: number, length: number): Promise<void> {
  if (length <= 0) return;
  await runTool('fallocate', ['--punch-hole', '-o', String(offset), '-l', String(length), file]);
}
