import { hostname } from 'node:os';
import { commonConfigShape, parseConfig } from '@tidemark/shared';
import { z } from 'zod';

const int = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

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
