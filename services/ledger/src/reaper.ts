import { makeEvent, type AnyEvent, type JobType, type Logger } from '@tidemark/shared';
import type { DataSource } from 'typeorm';
import { CREATED, applyEventsIsolating } from './persistence/event-store';

export interface StartReaperOptions {
  ds: DataSource;
  log: Logger;
  /** How long a job created by request may wait for its backup.start to reach the bus. */
  startTimeoutMs: number;
  intervalMs: number;
}

/**
 * Fails jobs the hub created whose backup.start never reached the bus (the hub died between
 * creating the job and publishing its start), so they do not hold the VM's one active slot
 * forever. Such a job never reached a runner, so failing it loses no change_id; should its
 * start arrive after all and the copy complete, the completion still wins (see the state
 * machine's presumed failures).
 */
export function startStartReaper(opts: StartReaperOptions): { stop(): Promise<void> } {
  let running: Promise<void> | null = null;
  const timer = setInterval(() => {
    running ??= reapOnce(opts)
      .then(
        () => undefined,
        (err) => opts.log.error({ err }, 'start reaper failed; will try again'),
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

export async function reapOnce({ ds, log, startTimeoutMs }: StartReaperOptions): Promise<number> {
  const cutoff = new Date(Date.now() - startTimeoutMs);
  const stale: { id: string; job_type: JobType }[] = await ds.query(
    `SELECT j.id, j.job_type FROM backup_jobs j JOIN processed_events p ON p.event_id = j.id
      WHERE p.outcome = ? AND j.status = 'queued' AND p.applied_at < ? LIMIT 500`,
    [CREATED, cutoff],
  );
  if (stale.length === 0) return 0;
  const events: AnyEvent[] = stale.map(
    (job) =>
      makeEvent('backup.failed', {
        jobId: job.id,
        jobType: job.job_type,
        data: {
          code: 'START_NOT_PUBLISHED',
          message: `backup.start did not reach the bus within ${Math.round(startTimeoutMs / 1000)} s of the job's creation`,
          retryable: true,
        },
      }) as AnyEvent,
  );
  const outcomes = await applyEventsIsolating(ds, events);
  outcomes.forEach((outcome, i) =>
    log.warn(
      { jobId: events[i].jobId, outcome: outcome.kind },
      'queued job failed: its start never reached the bus',
    ),
  );
  return stale.length;
}
