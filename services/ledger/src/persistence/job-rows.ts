import type { BackupType, DiskView, JobStatus, JobType, JobView } from '@tidemark/shared';
import type { DiskRecord, JobRecord } from '../domain/job';

/** A `backup_jobs` row as mysql2 returns it (BIGINT as string, BOOLEAN as 0/1). */
export interface JobRow {
  id: string;
  job_type: string;
  vm_name: string;
  backup_type: string;
  repository_id: string;
  policy_id: string | null;
  parent_backup_id: string | null;
  status: string;
  change_id: string | null;
  bytes_transferred: string | number | null;
  error_code: string | null;
  error_message: string | null;
  retryable: number | boolean | null;
  progress_phase: string | null;
  progress_sequence: string | number | null;
  progress_bytes_done: string | number | null;
  progress_bytes_total: string | number | null;
  progress_rate: string | number | null;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
  completion_seq: string | number | null;
  heartbeat_at: Date | null;
}

export interface DiskRow {
  job_id: string;
  disk_key: string;
  position: number;
  source: string | null;
  change_id: string | null;
  previous_change_id: string | null;
  bytes_transferred: string | number | null;
  bytes_total: string | number | null;
  target_path: string | null;
  backing_path: string | null;
  full_reason: string | null;
  canary_sampled_bytes: string | number | null;
  canary_mismatched_bytes: string | number | null;
}

const num = (v: string | number | null): number | null => (v === null ? null : Number(v));

export function jobFromRows(row: JobRow, disks: DiskRow[]): JobRecord {
  const sorted = [...disks].sort((a, b) => a.position - b.position);
  return {
    jobId: row.id,
    jobType: row.job_type as JobType,
    vmName: row.vm_name,
    backupType: row.backup_type as BackupType,
    repositoryId: row.repository_id,
    policyId: row.policy_id,
    parentJobId: row.parent_backup_id,
    status: row.status as JobStatus,
    changeId: row.change_id,
    bytesTransferred: num(row.bytes_transferred),
    errorCode: row.error_code,
    errorMessage: row.error_message,
    retryable: row.retryable === null ? null : Boolean(row.retryable),
    progress:
      row.progress_sequence === null
        ? null
        : {
            phase: row.progress_phase ?? '',
            sequence: Number(row.progress_sequence),
            bytesDone: num(row.progress_bytes_done) ?? 0,
            bytesTotal: num(row.progress_bytes_total) ?? 0,
            bytesPerSecond: num(row.progress_rate) ?? 0,
          },
    createdAt: row.created_at,
    startedAt: row.started_at,
    completedAt: row.completed_at,
    completionSeq: num(row.completion_seq),
    heartbeatAt: row.heartbeat_at,
    disks: new Map(
      sorted.map((d): [string, DiskRecord] => [
        d.disk_key,
        {
          diskKey: d.disk_key,
          source: d.source,
          changeId: d.change_id,
          previousChangeId: d.previous_change_id,
          bytesTransferred: num(d.bytes_transferred),
          bytesTotal: num(d.bytes_total),
          targetPath: d.target_path,
          backingPath: d.backing_path,
          fullReason: d.full_reason,
          canary:
            d.canary_sampled_bytes === null
              ? null
              : {
                  sampledBytes: Number(d.canary_sampled_bytes),
                  mismatchedBytes: Number(d.canary_mismatched_bytes ?? 0),
                },
        },
      ]),
    ),
  };
}

export function jobView(job: JobRecord): JobView {
  return {
    jobId: job.jobId,
    jobType: job.jobType,
    vmName: job.vmName,
    backupType: job.backupType,
    repositoryId: job.repositoryId,
    policyId: job.policyId,
    parentJobId: job.parentJobId,
    status: job.status,
    changeId: job.changeId,
    bytesTransferred: job.bytesTransferred,
    errorCode: job.errorCode,
    errorMessage: job.errorMessage,
    retryable: job.retryable,
    progress: job.progress,
    createdAt: job.createdAt.toISOString(),
    startedAt: job.startedAt?.toISOString() ?? null,
    completedAt: job.completedAt?.toISOString() ?? null,
    disks: [...job.disks.values()].map((d): DiskView => ({
      ...d,
      changeTracking:
        d.canary === null ? null : d.canary.mismatchedBytes > 0 ? 'untrusted' : 'trusted',
    })),
  };
}

export const jobColumns = [
  'id',
  'job_type',
  'vm_name',
  'backup_type',
  'repository_id',
  'policy_id',
  'parent_backup_id',
  'status',
  'change_id',
  'bytes_transferred',
  'error_code',
  'error_message',
  'retryable',
  'progress_phase',
  'progress_sequence',
  'progress_bytes_done',
  'progress_bytes_total',
  'progress_rate',
  'created_at',
  'started_at',
  'completed_at',
  'completion_seq',
  'heartbeat_at',
  'updated_at',
] as const;

export function jobValues(job: JobRecord, now: Date): unknown[] {
  const p = job.progress;
  return [
    job.jobId,
    job.jobType,
    job.vmName,
    job.backupType,
    job.repositoryId,
    job.policyId,
    job.parentJobId,
    job.status,
    job.changeId,
    job.bytesTransferred,
    job.errorCode,
    job.errorMessage,
    job.retryable,
    p?.phase ?? null,
    p?.sequence ?? null,
    p?.bytesDone ?? null,
    p?.bytesTotal ?? null,
    p?.bytesPerSecond ?? null,
    job.createdAt,
    job.startedAt,
    job.completedAt,
    job.completionSeq,
    job.heartbeatAt,
    now,
  ];
}

export const diskColumns = [
  'job_id',
  'disk_key',
  'position',
  'source',
  'change_id',
  'previous_change_id',
  'bytes_transferred',
  'bytes_total',
  'target_path',
  'backing_path',
  'full_reason',
  'canary_sampled_bytes',
  'canary_mismatched_bytes',
] as const;

export function diskValues(job: JobRecord): unknown[][] {
  return [...job.disks.values()].map((d, position) => [
    job.jobId,
    d.diskKey,
    position,
    d.source,
    d.changeId,
    d.previousChangeId,
    d.bytesTransferred,
    d.bytesTotal,
    d.targetPath,
    d.backingPath,
    d.fullReason,
    d.canary?.sampledBytes ?? null,
    d.canary?.mismatchedBytes ?? null,
  ]);
}
