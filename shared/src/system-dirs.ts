import { z } from 'zod';
import { DirPath } from './events/ids';

/**
 * Directories of the operating system that Tidemark never takes as a root to write backups
 * under or to read disks from, nor anything below them: programs, libraries, configuration,
 * the kernel's views and devices, and the package manager's and MySQL's own data.
 */
export const SYSTEM_TREES: readonly string[] = [
  '/bin',
  '/boot',
  '/dev',
  '/etc',
  '/proc',
  '/sbin',
  '/sys',
  '/usr',
  '/var/lib/apt',
  '/var/lib/dpkg',
  '/var/lib/mysql',
];

/**
 * Directories shared by the whole system (or all its users) that are refused themselves, while
 * a directory of their own below them is fine (`/var` and `/var/lib` are refused
 * as they hold system directories) (`/srv/tidemark`, `/var/lib/tidemark`, the QMP
 * sockets under `/run/vm`, a test's directory under `/tmp`).
 */
export const SHARED_DIRECTORIES: readonly string[] = [
  '/home',
  '/media',
  '/mnt',
  '/opt',
  '/root',
  '/run',
  '/srv',
  '/tmp',
  '/var/run',
  '/var/tmp',
];

const under = (dir: string, path: string) => path === dir || path.startsWith(`${dir}/`);

/**
 * Why `path` (absolute and normal, as DirPath holds it) must not be a root that Tidemark
 * writes or reads under, or null: `/`, a directory above a system directory (it holds it), a
 * system directory or anything below one (`/lib*` as well), or a shared directory itself.
 */
export function systemDirectoryReason(path: string): string | null {
  if (path === '/') return 'is the root directory';
  const top = /^\/lib[^/]*(?:\/|$)/.exec(path);
  if (top) return `is the system directory ${path.split('/').slice(0, 2).join('/')} or below it`;
  const tree = SYSTEM_TREES.find((dir) => under(dir, path));
  if (tree) return `is the system directory ${tree} or below it`;
  const holds = SYSTEM_TREES.find((dir) => under(path, dir));
  if (holds) return `holds the system directory ${holds}`;
  if (SHARED_DIRECTORIES.includes(path))
    return `is the shared directory ${path} itself (use a directory of its own below it)`;
  return null;
}

/**
 * A repository's root directory as one is created: a DirPath that is neither `/` nor a system
 * directory (`systemDirectoryReason`).
 */
export const RepositoryRoot = DirPath.superRefine((path, ctx) => {
  const why = systemDirectoryReason(path);
  if (why !== null)
    ctx.addIssue({
      code: 'custom',
      message: `must not be / or a system directory: ${path} ${why}`,
    });
});
export type RepositoryRoot = z.output<typeof RepositoryRoot>;
