import type { BackupType, JobStatus, JobType } from '@tidemark/shared';

/** The ledger's record of one job, as the state machine sees it (no I/O, no ORM). */
export interface JobRecord {
  jobId: string;
  jobType: JobType;
  vmName: string;
  backupType: BackupType;
  repositoryId: string;
  policyId: string | null;
  parentJobId: string | null;
  status: JobStatus;
  /** The job's change_id when it has exactly one disk; per-disk values live in `disks`. */
  changeId: string | null;
  bytesTransferred: number | null;
  errorCode: string | null;
  errorMessage: string | null;
  retryable: boolean | null;
  progress: ProgressRecord | null;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
  /**
   * The ledger's own order of completions (assigned when it records one, never a runner's
   * clock): the chain head is the completed job of the chain with the highest. Null until then.
   */
  completionSeq: number | null;
  /**
   * When the job's runner last gave word (its latest progress), by the time the bus took that
   * event: the stale-job reaper's lease runs from here. Null before any progress.
   */
  heartbeatAt: Date | null;
  /** Keyed by disk key, in the order the disks were first reported. */
  disks: Map<string, DiskRecord>;
}

export interface ProgressRecord {
  phase: string;
  sequence: number;
  bytesDone: number;
  bytesTotal: number;
  bytesPerSecond: number;
}

export interface DiskRecord {
  diskKey: string;
  source: string | null;
  changeId: string | null;
  previousChangeId: string | null;
  bytesTransferred: number | null;
  bytesTotal: number | null;
  targetPath: string | null;
  backingPath: string | null;
  /** Why this disk of an incremental was (to be) copied in full; null when it continues. */
  fullReason: string | null;
  /** The CBT canary's figures (any mismatch: the tracking missed writes); null when not run. */
  canary: { sampledBytes: number; mismatchedBytes: number } | null;
}

export const activeStatuses: readonly JobStatus[] = ['queued', 'running'];

export function isActive(status: JobStatus): boolean {
  return activeStatuses.includes(status);
}

export function cloneJob(job: JobRecord): JobRecord {
  return {
    ...job,
    progress: job.progress && { ...job.progress },
    disks: new Map([...job.disks].map(([k, d]) => [k, { ...d }])),
  };
}
