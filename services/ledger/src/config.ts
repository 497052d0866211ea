import { commonConfigShape, parseConfig } from '@tidemark/shared';
import { z } from 'zod';

const int = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

export const LedgerConfigSchema = z.object({
  ...commonConfigShape,
  TIDEMARK_MYSQL_URL: z
    .url({ protocol: /^mysql$/, error: 'must be a mysql:// URL' })
    .default('mysql://root@127.0.0.1:3306/tidemark'),
  /** Most events committed in one transaction. */
  TIDEMARK_LEDGER_BATCH_MAX: int(1, 5000, 500),
  /** How long an unacknowledged event waits before JetStream redelivers it. */
  TIDEMARK_LEDGER_ACK_WAIT_MS: int(1000, 3_600_000, 30_000),
  /** Deliveries of an event for a never-started job before it is dead-lettered. */
  TIDEMARK_LEDGER_DEFER_LIMIT: int(1, 1000, 30),
  TIDEMARK_LEDGER_DEFER_DELAY_MS: int(10, 600_000, 2000),
  /** How long a job the hub created may wait for its backup.start before it is failed. */
  TIDEMARK_LEDGER_START_TIMEOUT_MS: int(1000, 86_400_000, 120_000),
  /**
   * How long a running job may go without progress from its runner before it is failed
   * (LEASE_EXPIRED, retryable). Runners report at least every third of their ack wait.
   */
  TIDEMARK_LEDGER_LEASE_MS: int(1000, 86_400_000, 300_000),
  TIDEMARK_LEDGER_REAPER_INTERVAL_MS: int(100, 3_600_000, 15_000),
  /** Connections to MySQL. */
  TIDEMARK_LEDGER_DB_POOL: int(1, 100, 10),
});
export type LedgerConfig = z.output<typeof LedgerConfigSchema>;

export function loadConfig(env: Record<string, string | undefined> = process.env): LedgerConfig {
  return parseConfig(LedgerConfigSchema, env);
}
