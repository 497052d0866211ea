import {
  isRetryable,
  makeEvent,
  type AnyEvent,
  type FailureCode,
  type JobType,
  type Logger,
} from '@tidemark/shared';
import type { DataSource } from 'typeorm';
import { CREATED, applyEventsIsolating } from './persistence/event-store';

export interface StartReaperOptions {
  ds: DataSource;
  log: Logger;
  /** How long a job created by request may wait for its backup.start to reach the bus. */
  startTimeoutMs: number;
  /** How long a running job may go without a word (progress) from its runner. */
  leaseMs: number;
  intervalMs: number;
  /**
   * How far the ledger has caught up with the bus (see EventConsumer.caughtUpTo); null: not
   * known yet, reap nothing. Leases are judged against it, never against a clock the backlog
   * has not reached.
   */
  caughtUpTo: () => Promise<Date | null>;
}

/**
 * Fails, retryable, the jobs nobody will finish, so that none holds its VM's one active slot
 * forever: a job the hub created whose backup.start never reached the bus (the hub died between
 * creating the job and publishing its start), and a running job whose runner has stopped
 * reporting for longer than the lease (runners send progress at least every third of their ack
 * wait). Either failure is presumed: should the copy complete after all, its completion still
 * wins (see the state machine's presumed failures), so no change_id is lost.
 */
export function startStartReaper(opts: StartReaperOptions): { stop(): Promise<void> } {
  let running: Promise<void> | null = null;
  const timer = setInterval(() => {
    running ??= reapOnce(opts)
      .then(
        () => undefined,
        (err) => opts.log.error({ err }, 'reaper failed; will try again'),
      )
      .finally(() => (running = null));
  }, opts.intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

/** One pass: the jobs failed now. */
export async function reapOnce(opts: StartReaperOptions): Promise<number> {
  const { ds, startTimeoutMs, leaseMs } = opts;
  const upTo = await opts.caughtUpTo();
  if (upTo === null) return 0;
  const unstarted: StaleJob[] = await ds.query(
    `SELECT j.id, j.job_type FROM backup_jobs j JOIN processed_events p ON p.event_id = j.id
      WHERE p.outcome = ? AND j.status = 'queued' AND p.applied_at < ? LIMIT 500`,
    [CREATED, new Date(upTo.getTime() - startTimeoutMs)],
  );
  // The runner's last word by the bus's clock (rows of before heartbeats: their update time).
  const silent: StaleJob[] = await ds.query(
    `SELECT id, job_type FROM backup_jobs
      WHERE status = 'running' AND COALESCE(heartbeat_at, updated_at) < ? LIMIT 500`,
    [new Date(upTo.getTime() - leaseMs)],
  );
  await failJobs(
    opts,
    unstarted,
    'START_NOT_PUBLISHED',
    `backup.start did not reach the bus within ${Math.round(startTimeoutMs / 1000)} s of the job's creation`,
    'queued job failed: its start never reached the bus',
  );
  await failJobs(
    opts,
    silent,
    'LEASE_EXPIRED',
    `no word from the job's runner for more than ${Math.round(leaseMs / 1000)} s (the runner stopped or lost the bus)`,
    'running job failed: its runner stopped reporting',
  );
  return unstarted.length + silent.length;
}

interface StaleJob {
  id: string;
  job_type: JobType;
}

async function failJobs(
  { ds, log }: StartReaperOptions,
  jobs: StaleJob[],
  code: FailureCode,
  message: string,
  logMessage: string,
): Promise<void> {
  if (jobs.length === 0) return;
  const events: AnyEvent[] = jobs.map(
    (job) =>
      makeEvent('backup.failed', {
        jobId: job.id,
        jobType: job.job_type,
        data: { code, message, retryable: isRetryable(code) },
      }) as AnyEvent,
  );
  const outcomes = await applyEventsIsolating(ds, events);
  outcomes.forEach((outcome, i) =>
    log.warn({ jobId: events[i].jobId, outcome: outcome.kind, code }, logMessage),
  );
}
