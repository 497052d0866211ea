import {
  makeEvent,
  type CompletedDiskData,
  type JobType,
  type StartData,
  type TidemarkEvent,
} from '@tidemark/shared';
import type { Refusal } from './admission';
import type { ClientOutcome } from './client-process';

/** The job a result is about: its id, type and start. */
export interface ResultContext {
  jobId: string;
  jobType: JobType;
  start: StartData;
}

/** What every result carries so the ledger can record it without having seen the start. */
function context(start: StartData) {
  return { vmName: start.vmName, backupType: start.backupType, repositoryId: start.repositoryId };
}

/** A completion of `disks`; the total is theirs unless the client counted it (`bytes`). */
export function completedEvent(
  job: ResultContext,
  disks: CompletedDiskData[],
  id?: string,
  bytes = disks.reduce((sum, d) => sum + d.bytesTransferred, 0),
): TidemarkEvent<'backup.completed'> {
  return makeEvent('backup.completed', {
    jobId: job.jobId,
    jobType: job.jobType,
    ...(id ? { id } : {}),
    data: {
      ...context(job.start),
      policyId: job.start.policyId,
      parentJobId: job.start.parentJobId,
      disks,
      bytesTransferred: bytes,
    },
  });
}

export function failedEvent(
  job: ResultContext,
  refusal: Refusal,
  id: string,
  finishedDisks: CompletedDiskData[] = [],
): TidemarkEvent<'backup.failed'> {
  return makeEvent('backup.failed', {
    jobId: job.jobId,
    jobType: job.jobType,
    id,
    data: { ...refusal, finishedDisks, ...context(job.start) },
  });
}

/** A `backup.alert` per disk whose CBT canary found writes its change tracking missed. */
export function alertEvents(
  completion: TidemarkEvent<'backup.completed'>,
): Array<TidemarkEvent<'backup.alert'>> {
  return completion.data.disks.flatMap((disk) =>
    disk.canary && disk.canary.mismatchedBytes > 0
      ? [
          makeEvent('backup.alert', {
            id: `${completion.jobId}.alert.${disk.diskKey}`,
            jobId: completion.jobId,
            jobType: completion.jobType,
            data: {
              kind: 'CHANGE_TRACKING_UNTRUSTED',
              vmName: completion.data.vmName,
              diskKey: disk.diskKey,
              changeId: disk.changeId,
              sampledBytes: disk.canary.sampledBytes,
              mismatchedBytes: disk.canary.mismatchedBytes,
              message: `disk ${disk.diskKey}: ${disk.canary.mismatchedBytes} of ${disk.canary.sampledBytes} sampled bytes the change tracking called unchanged differ from the chain; its next job copies it in full`,
            },
          }),
        ]
      : [],
  );
}

/**
 * The event that reports how the client's run ended. A copy that completed is a completion even
 * when a cancel came meanwhile (its change_ids are real backup points); a run that failed after
 * a cancel is the cancel's CANCELLED; any other failure is the client's own, with the disks
 * that did finish. Pure but for the event's time.
 */
export function resultEvent(
  job: ResultContext,
  outcome: ClientOutcome,
  cancelled: string | undefined,
  id: string,
): TidemarkEvent<'backup.completed'> | TidemarkEvent<'backup.failed'> {
  if (outcome.status === 'completed')
    return completedEvent(job, outcome.disks, id, outcome.bytesTransferred);
  if (cancelled !== undefined)
    return failedEvent(job, { code: 'CANCELLED', message: cancelled, retryable: false }, id);
  const { code, message, retryable, finishedDisks } = outcome;
  return failedEvent(job, { code, message, retryable }, id, finishedDisks);
}
