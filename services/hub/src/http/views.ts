// Domain views (camelCase, as the ledger reports them) rendered in the wire format.
import type { JobView, PolicyView, RepositoryView, VmView, api as wire } from '@tidemark/shared';
import type { z } from 'zod';
import type { PublishedJobEvent, StartedJob } from '../jobs/start-job';

type Wire<S extends z.ZodType> = z.output<S>;
type JobFields = Omit<Wire<typeof wire.BackupJob>, 'backup_id'>;
type AcceptedFields = Omit<Wire<typeof wire.AcceptedBackup>, 'backup_id'>;

export function vmWire(vm: VmView): Wire<typeof wire.Vm> {
  return {
    vm_name: vm.vmName,
    disks: vm.disks.map((d) => ({ disk_key: d.diskKey, driver: d.driver, path: d.path })),
    created_at: vm.createdAt,
  };
}

export function repositoryWire(repo: RepositoryView): Wire<typeof wire.Repository> {
  return { id: repo.id, name: repo.name, path: repo.path, created_at: repo.createdAt };
}

export function policyWire(policy: PolicyView): Wire<typeof wire.Policy> {
  return {
    id: policy.id,
    name: policy.name,
    schedule: policy.schedule,
    retention_count: policy.retentionCount,
    created_at: policy.createdAt,
  };
}

/** A job, without its id: the route names the id `backup_id` or `job_id`. */
export function jobFields(job: JobView): JobFields {
  return {
    job_type: job.jobType,
    vm_name: job.vmName,
    backup_type: job.backupType,
    repository_id: job.repositoryId,
    policy_id: job.policyId,
    parent_backup_id: job.parentJobId,
    status: job.status,
    change_id: job.changeId,
    bytes_transferred: job.bytesTransferred,
    error_code: job.errorCode,
    error_message: job.errorMessage,
    retryable: job.retryable,
    progress: job.progress && {
      phase: job.progress.phase,
      sequence: job.progress.sequence,
      bytes_done: job.progress.bytesDone,
      bytes_total: job.progress.bytesTotal,
      bytes_per_second: job.progress.bytesPerSecond,
    },
    created_at: job.createdAt,
    started_at: job.startedAt,
    completed_at: job.completedAt,
    disks: job.disks.map((d) => ({
      disk_key: d.diskKey,
      change_id: d.changeId,
      previous_change_id: d.previousChangeId,
      bytes_transferred: d.bytesTransferred,
      bytes_total: d.bytesTotal,
      target_path: d.targetPath,
      backing_path: d.backingPath,
      full_reason: d.fullReason,
      canary: d.canary && {
        sampled_bytes: d.canary.sampledBytes,
        mismatched_bytes: d.canary.mismatchedBytes,
      },
      change_tracking: d.changeTracking,
    })),
  };
}

/** The 202 answer to a started job, without its id: the job as recorded, the disks as planned. */
export function acceptedFields({ job, plan }: StartedJob): AcceptedFields {
  return {
    job_type: job.jobType,
    status: job.status,
    backup_type: plan.backupType,
    parent_backup_id: plan.parentJobId,
    disks: plan.disks.map((d) => ({
      disk_key: d.diskKey,
      previous_change_id: d.previousChangeId,
      target_path: d.targetPath,
      backing_path: d.backingPath,
      full_reason: d.fullReason,
    })),
  };
}

/** The 202 answer to a request that became an event for a job. */
export function eventAcceptedView(done: PublishedJobEvent): Wire<typeof wire.EventAccepted> {
  return { job_id: done.jobId, job_type: done.jobType, event_id: done.eventId };
}
