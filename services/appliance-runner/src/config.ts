import { hostname } from 'node:os';
import { commonConfigShape, DirPath, parseConfig, systemDirectoryReason } from '@tidemark/shared';
import { z } from 'zod';

const int = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

/**
 * A list of directories the runner trusts, from its own configuration (never from an event):
 * absolute, normal paths separated by `:` or `,`, at least one. `/` and system directories
 * (`systemDirectoryReason`) are refused. Required, with no default: a runner that is not told
 * where it may write and read refuses to start, rather than start and trust every event (or
 * take jobs off the shared consumer only to fail each one another runner could have run).
 */
const roots = (what: string) =>
  z
    .string({ error: `required: the ${what}, absolute paths separated by ":" or ","` })
    .transform((value, ctx) => {
      const list = value
        .split(/[:,]/)
        .map((p) => p.trim())
        .filter((p) => p !== '');
      if (list.length === 0) {
        ctx.addIssue({ code: 'custom', message: `names no directory: give the ${what}` });
        return z.NEVER;
      }
      for (const path of list) {
        const parsed = DirPath.safeParse(path);
        if (!parsed.success) {
          ctx.addIssue({
            code: 'custom',
            message: `${path}: ${parsed.error.issues.map((i) => i.message).join('; ')}`,
          });
          continue;
        }
        const why = systemDirectoryReason(path);
        if (why !== null)
          ctx.addIssue({ code: 'custom', message: `${path} ${why}: not a root a job may use` });
      }
      return [...new Set(list)];
    });

export const RunnerConfigSchema = z.object({
  ...commonConfigShape,
  /** Jobs this runner copies at once. */
  TIDEMARK_RUNNER_CONCURRENCY: int(1, 64, 2),
  /**
   * How long JetStream waits for a sign of life before it hands a job to another runner; the
   * runner sends one every third of it while the client runs.
   */
  TIDEMARK_RUNNER_ACK_WAIT_MS: int(1000, 3_600_000, 60_000),
  /** Attempts of one job (a runner died mid-copy) before it is failed instead of retried. */
  TIDEMARK_RUNNER_MAX_ATTEMPTS: int(1, 100, 3),
  /** On SIGTERM, how long running jobs may go on before they are stopped and failed. */
  TIDEMARK_RUNNER_GRACE_MS: int(0, 86_400_000, 30_000),
  /** The backup client's entry script (run with this Node.js); default: the installed one. */
  TIDEMARK_RUNNER_CLIENT: z.string().min(1).optional(),
  /** Job files, client sockets and fleece overlays; default: the system temp dir. */
  TIDEMARK_RUNNER_WORK_DIR: z.string().min(1).optional(),
  /**
   * The directories jobs may write under: a job's repository root (from its event or the
   * ledger) must be one of them or below one, symlinks resolved; else PATH_OUTSIDE_REPOSITORY.
   */
  TIDEMARK_REPOSITORY_ROOTS: roots('repository roots jobs may write under'),
  /**
   * The directories jobs may read disks from: a source image, and a live disk's QMP and NBD
   * sockets, must be below one of them, symlinks resolved; else SOURCE_NOT_ALLOWED.
   */
  TIDEMARK_SOURCE_ROOTS: roots(
    'source roots jobs may read disks (images, QMP and NBD sockets) from',
  ),
  /** This runner's name in logs and target locks. */
  TIDEMARK_RUNNER_ID: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,128}$/, 'only letters, digits, ".", "_" and "-"')
    .default(`${hostname()}-${process.pid}`),
});
export type RunnerConfig = z.output<typeof RunnerConfigSchema>;

export function loadConfig(env: Record<string, string | undefined> = process.env): RunnerConfig {
  return parseConfig(RunnerConfigSchema, env);
}
