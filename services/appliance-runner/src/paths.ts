import { lstat, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, relative, sep } from 'node:path';
import type { Logger, StartData } from '@tidemark/shared';
import type { Refusal } from './admission';

/** A job path that would be written outside its repository; the job fails naming it. */
export class PathOutsideRepositoryError extends Error {
  override name = 'PathOutsideRepositoryError';
  constructor(
    readonly field: string,
    readonly path: string,
    reason: string,
  ) {
    super(`${field} ${path} ${reason}`);
  }
}

function inside(root: string, path: string): boolean {
  return root === sep ? path.startsWith(sep) : path === root || path.startsWith(root + sep);
}

/**
 * `path` with every symlink resolved: the real path of its deepest existing ancestor, then the
 * part that does not exist yet (which cannot hold a symlink).
 */
async function resolveReal(path: string): Promise<string> {
  for (let p = path; ; p = dirname(p)) {
    try {
      return join(await realpath(p), relative(p, path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || p === dirname(p)) throw err;
    }
  }
}

/**
 * Checks that `path` (a target or backing file of a job) stays inside the repository at
 * `root`: absolute, spelled without `.`/`..` detours, under the root once every symlink of its
 * existing directories is resolved, and not itself a symlink. Throws
 * PathOutsideRepositoryError naming `field` otherwise.
 */
export async function checkInsideRepository(
  root: string,
  field: string,
  path: string,
): Promise<void> {
  if (!isAbsolute(path) || normalize(path) !== path || path.endsWith(sep)) {
    throw new PathOutsideRepositoryError(field, path, 'is not a normal absolute path');
  }
  if (!inside(root, path) || path === root) {
    throw new PathOutsideRepositoryError(field, path, `is not under the repository ${root}`);
  }
  const realRoot = await resolveReal(root);
  const realDir = await resolveReal(dirname(path));
  if (!inside(realRoot, realDir)) {
    throw new PathOutsideRepositoryError(
      field,
      path,
      `leads out of the repository ${root} through a symlink (to ${realDir})`,
    );
  }
  const stat = await lstat(path).catch(() => null);
  if (stat?.isSymbolicLink()) {
    throw new PathOutsideRepositoryError(
      field,
      path,
      'is a symlink; a job never writes through one',
    );
  }
}

/**
 * Why a job must not run because of where it would write, or null: every target and backing
 * path must lie inside the job's repository (its root from the event, else from `rootOf`, the
 * ledger).
 */
export async function refusePaths(
  start: StartData,
  rootOf: (repositoryId: string) => Promise<string>,
  log: Logger,
): Promise<Refusal | null> {
  let root = start.repositoryPath;
  if (root === undefined) {
    try {
      root = await rootOf(start.repositoryId);
    } catch (err) {
      log.warn({ err: String(err) }, 'repository root unknown');
      return {
        code: 'REPOSITORY_UNKNOWN',
        message: `the start names no repositoryPath and the ledger did not give the root of repository ${start.repositoryId}: ${String(err)}`,
        retryable: true,
      };
    }
  }
  try {
    for (const [i, d] of start.disks.entries()) {
      await checkInsideRepository(root, `disks[${i}].targetPath`, d.targetPath);
      if (d.backingPath !== null)
        await checkInsideRepository(root, `disks[${i}].backingPath`, d.backingPath);
    }
    return null;
  } catch (err) {
    if (!(err instanceof PathOutsideRepositoryError)) throw err;
    return { code: 'PATH_OUTSIDE_REPOSITORY', message: err.message, retryable: false };
  }
}
