import { lstat, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, relative, sep } from 'node:path';
import { ConfigError, systemDirectoryReason, type Logger, type StartData } from '@tidemark/shared';
import { sourcePaths } from '@tidemark/backup-client/source/source-paths';
import type { Refusal } from './admission';

/**
 * Where this runner lets jobs write and read: its own configuration, never an event's word. A
 * `backup.start` (from whoever can publish on the bus) only narrows it: its repository root
 * must lie in `repository`, its sources in `source`.
 */
export interface AllowedRoots {
  /** TIDEMARK_REPOSITORY_ROOTS: a job's repository root is one of these or below one. */
  repository: readonly string[];
  /** TIDEMARK_SOURCE_ROOTS: every image and socket a job's sources open is below one. */
  source: readonly string[];
}

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

/** A source the runner does not let a job open; the job fails naming it. */
export class SourceNotAllowedError extends Error {
  override name = 'SourceNotAllowedError';
  constructor(
    readonly field: string,
    readonly source: string,
    reason: string,
  ) {
    super(`${field} ${source}: ${reason}`);
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

const isNormalAbsolute = (path: string) =>
  isAbsolute(path) &&
  normalize(path) === path &&
  (path === sep || !path.endsWith(sep)) &&
  !path.includes('\0');

/**
 * The configured roots with every symlink resolved, each checked again once real: a root that
 * is a symlink to `/` or a system directory stops the runner as a spelled one does. Throws
 * ConfigError naming the variable.
 */
export async function realRoots(variable: string, roots: readonly string[]): Promise<string[]> {
  const real: string[] = [];
  for (const root of roots) {
    const resolved = await resolveReal(root);
    const why = systemDirectoryReason(resolved);
    if (why !== null) {
      const message = `${root} leads to ${resolved}, which ${why}: not a root a job may use`;
      throw new ConfigError(`invalid configuration: ${variable}: ${message}`, [
        { path: variable, message },
      ]);
    }
    real.push(resolved);
  }
  return real;
}

/**
 * Checks that a job's repository root `root` is one of the runner's repository roots or below
 * one, both as spelled and once every symlink is resolved (a root a symlink leads out of the
 * configured ones is refused, as is a sibling that only shares a prefix: `/srv/repo-evil` is
 * not below `/srv/repo`). Throws PathOutsideRepositoryError naming `field` otherwise.
 */
export async function checkRepositoryRoot(
  allowed: readonly string[],
  field: string,
  root: string,
): Promise<void> {
  const list = `TIDEMARK_REPOSITORY_ROOTS: ${allowed.join(', ') || 'none'}`;
  if (!isNormalAbsolute(root))
    throw new PathOutsideRepositoryError(field, root, 'is not a normal absolute path');
  if (!allowed.some((a) => inside(a, root)))
    throw new PathOutsideRepositoryError(
      field,
      root,
      `is not one of the runner's repository roots nor below one (${list})`,
    );
  const real = await resolveReal(root).catch((err: unknown) => {
    throw new PathOutsideRepositoryError(field, root, `cannot be resolved: ${String(err)}`);
  });
  for (const a of allowed) if (inside(await resolveReal(a), real)) return;
  throw new PathOutsideRepositoryError(
    field,
    root,
    `leads out of the runner's repository roots through a symlink (to ${real}; ${list})`,
  );
}

/**
 * Checks that every path the client would open for `source` (an image, a live disk's QMP and
 * NBD sockets: `sourcePaths`, the client's own reading of the string) lies below one of the
 * runner's source roots, as spelled and once every symlink is resolved, the last one too.
 * Throws SourceNotAllowedError naming `field` otherwise.
 */
export async function checkSourceAllowed(
  allowed: readonly string[],
  field: string,
  source: string,
): Promise<void> {
  const list = `TIDEMARK_SOURCE_ROOTS: ${allowed.join(', ') || 'none'}`;
  let paths: ReturnType<typeof sourcePaths>;
  try {
    paths = sourcePaths(source);
  } catch (err) {
    throw new SourceNotAllowedError(
      field,
      source,
      `not a source the runner opens (${(err as Error).message})`,
    );
  }
  for (const { what, path } of paths) {
    if (!isNormalAbsolute(path))
      throw new SourceNotAllowedError(
        field,
        source,
        `its ${what} ${path} is not a normal absolute path`,
      );
    if (!allowed.some((a) => inside(a, path) && path !== a))
      throw new SourceNotAllowedError(
        field,
        source,
        `its ${what} ${path} is not below the runner's source roots (${list})`,
      );
    const real = await resolveReal(path).catch((err: unknown) => {
      // A path that cannot be resolved (a file where a directory should be, no permission)
      // is no source the client could open either: refused, not retried.
      throw new SourceNotAllowedError(field, source, `its ${what} ${path}: ${String(err)}`);
    });
    let ok = false;
    for (const a of allowed) {
      const realRoot = await resolveReal(a);
      if (inside(realRoot, real) && real !== realRoot) ok = true;
    }
    if (!ok)
      throw new SourceNotAllowedError(
        field,
        source,
        `its ${what} ${path} leads out of the runner's source roots through a symlink (to ${real}; ${list})`,
      );
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
 * Why a job must not run because of where it would write or what it would read, or null. The
 * job's repository root (from the event, else from `rootOf`, the ledger) must lie in the
 * runner's repository roots, and every target and backing path inside that root
 * (PATH_OUTSIDE_REPOSITORY); every source must open only paths below the runner's source
 * roots (SOURCE_NOT_ALLOWED). Decided before anything is written, locked or opened.
 */
export async function refusePaths(
  start: StartData,
  allowed: AllowedRoots,
  rootOf: (repositoryId: string) => Promise<string>,
  log: Logger,
): Promise<Refusal | null> {
  let root = start.repositoryPath;
  const rootField = root === undefined ? "the ledger's repository root" : 'repositoryPath';
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
    await checkRepositoryRoot(allowed.repository, rootField, root);
    for (const [i, d] of start.disks.entries()) {
      await checkInsideRepository(root, `disks[${i}].targetPath`, d.targetPath);
      if (d.backingPath !== null)
        await checkInsideRepository(root, `disks[${i}].backingPath`, d.backingPath);
    }
    for (const [i, d] of start.disks.entries())
      await checkSourceAllowed(allowed.source, `disks[${i}].source`, d.source);
    return null;
  } catch (err) {
    if (err instanceof PathOutsideRepositoryError)
      return { code: 'PATH_OUTSIDE_REPOSITORY', message: err.message, retryable: false };
    if (err instanceof SourceNotAllowedError)
      return { code: 'SOURCE_NOT_ALLOWED', message: err.message, retryable: false };
    throw err;
  }
}
