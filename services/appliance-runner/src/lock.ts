import { mkdir, open, readFile, rm, stat, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export const LOCK_NAME = '.tidemark-job.lock';

export interface TargetLock {
  /** Marks the locks alive (their mtime), so another runner does not take them as stale. */
  refresh(): Promise<void>;
  release(): Promise<void>;
}

/** Another attempt of the job holds a target directory. */
export class LockedError extends Error {
  override readonly name = 'LockedError';
}

/**
 * Locks every directory a job writes into, so two attempts of one job (a runner thought dead
 * and the one that took over) never write the same target at once. A lock is a file created
 * exclusively; its holder touches it while the job runs. One untouched for `staleMs` (longer
 * than JetStream's ack wait: its holder is gone, or the job would not have been redelivered)
 * is taken over.
 */
export async function lockTargets(
  targetPaths: string[],
  owner: { runnerId: string; jobId: string; attempt: number },
  staleMs: number,
): Promise<TargetLock> {
  const dirs = [...new Set(targetPaths.map((p) => dirname(p)))].sort();
  const held: string[] = [];
  try {
    for (const dir of dirs) {
      await mkdir(dir, { recursive: true });
      const path = join(dir, LOCK_NAME);
      for (let tries = 0; ; tries++) {
        try {
          const fh = await open(path, 'wx');
          await fh.writeFile(JSON.stringify({ ...owner, pid: process.pid, at: new Date() }));
          await fh.close();
          held.push(path);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || tries > 0) throw err;
          const age = Date.now() - (await stat(path)).mtimeMs;
          const holder = await readFile(path, 'utf8').catch(() => '?');
          if (age < staleMs)
            throw new LockedError(
              `target directory ${dir} is locked by another attempt (${holder}, touched ${Math.round(age / 1000)} s ago)`,
            );
          await rm(path, { force: true }); // stale: its runner is gone
        }
      }
    }
  } catch (err) {
    await Promise.all(held.map((p) => rm(p, { force: true })));
    throw err;
  }
  return {
    async refresh() {
      const now = new Date();
      await Promise.all(held.map((p) => utimes(p, now, now).catch(() => undefined)));
    },
    async release() {
      await Promise.all(held.map((p) => rm(p, { force: true })));
    },
  };
}
