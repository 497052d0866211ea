import { ConflictError, forJob, makeEvent } from '@tidemark/shared';
import type { JobDeps, PublishedJobEvent } from './start-job';

export interface CancelRequest {
  jobId: string;
  /** Why, for the job's record. */
  reason: string | null;
}

/**
 * Asks for a queued or running job to stop: publishes `backup.cancel`, which the ledger records
 * (the job ends cancelled) and the runner running the job acts on (the client stops, the
 * attempt's files go). A job that has already ended is a 409 naming how it ended.
 */
export async function cancelJob(deps: JobDeps, req: CancelRequest): Promise<PublishedJobEvent> {
  const job = await deps.bus.ask('jobs.get', { jobId: req.jobId });
  const log = forJob(deps.log, job.jobId, { jobType: job.jobType });
  if (job.status !== 'queued' && job.status !== 'running') {
    throw new ConflictError(`job ${job.jobId} already ended as ${job.status}`, [
      {
        path: 'jobId',
        message: `job is ${job.status}; only a queued or running job can be cancelled`,
      },
    ]);
  }
  const event = makeEvent('backup.cancel', {
    jobId: job.jobId,
    jobType: job.jobType,
    data: { reason: req.reason },
  });
  await deps.bus.publish(event);
  log.info(
    { eventId: event.id, status: job.status, reason: req.reason },
    'backup.cancel published',
  );
  return { jobId: job.jobId, jobType: job.jobType, eventId: event.id };
}
