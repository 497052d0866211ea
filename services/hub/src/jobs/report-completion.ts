import { randomUUID } from 'node:crypto';
import { ConflictError, forJob } from '@tidemark/shared';
import type { JobDeps, PublishedJobEvent } from './start-job';

export interface CompletionReport {
  jobId: string;
  /** The one disk's new change_id. */
  changeId: string;
  bytesTransferred: number;
}

/**
 * An old client's "my copy is done, here is the change_id": turned into the `backup.completed`
 * event a runner would publish. Everything but the change_id and byte count comes from the
 * ledger's record of the job, its type above all: never from the shape of the id.
 */
export async function reportCompletion(
  deps: JobDeps,
  report: CompletionReport,
): Promise<PublishedJobEvent> {
  const job = await deps.bus.ask('jobs.get', { jobId: report.jobId });
  const log = forJob(deps.log, job.jobId, { jobType: job.jobType });
  if (job.disks.length !== 1) {
    throw new ConflictError(
      `job ${job.jobId} has ${job.disks.length} disks, and this route carries one change_id; ` +
        'its client must publish backup.completed with every disk',
      [{ path: 'changeId', message: `one change_id for ${job.disks.length} disks` }],
    );
  }
  const [disk] = job.disks;
  if (job.status === 'completed' && disk.changeId !== report.changeId) {
    // The ledger would keep it only as a dead letter: tell the client now.
    throw new ConflictError(
      `job ${job.jobId} already completed with change_id ${disk.changeId ?? 'none'}`,
      [{ path: 'body.change_id', message: `differs from the recorded ${disk.changeId ?? 'none'}` }],
    );
  }
  const eventId = randomUUID();
  await deps.bus.ask('jobs.complete', {
    jobId: job.jobId,
    eventId,
    data: {
      vmName: job.vmName,
      backupType: job.backupType,
      repositoryId: job.repositoryId,
      policyId: job.policyId,
      parentJobId: job.parentJobId,
      disks: [
        {
          diskKey: disk.diskKey,
          changeId: report.changeId,
          bytesTransferred: report.bytesTransferred,
          targetPath: disk.targetPath,
          bytesTotal: disk.bytesTotal,
        },
      ],
      bytesTransferred: report.bytesTransferred,
    },
  });
  log.info(
    { eventId, diskKey: disk.diskKey, changeId: report.changeId, status: job.status },
    'completion reported by an old client; recorded by the ledger',
  );
  return { jobId: job.jobId, jobType: job.jobType, eventId };
}
