import type { CompletedDiskData, FailureCode, JobType, JobView } from '@tidemark/shared';

/** A refusal the runner reports as the job's `backup.failed`. */
export interface Refusal {
  code: FailureCode;
  message: string;
  retryable: boolean;
}

/**
 * What the runner knows about a delivery of `backup.start` when it decides whether to run it.
 * Facts that cost I/O (or, for the lock, leave a trace) are gathered only when `admit` asks for
 * them, in the order it asks: `undefined` means not gathered yet.
 */
export interface AdmissionFacts {
  jobId: string;
  jobType: JobType;
  /** JetStream's delivery count of this start: 1 for the first attempt. */
  attempt: number;
  maxAttempts: number;
  /** The job as the ledger has it; `unknown` when it has none, `unavailable` when it did not say. */
  record?: JobView | 'unknown' | 'unavailable';
  /**
   * Why the job must not write or read where it would, or null: a repository root outside the
   * runner's TIDEMARK_REPOSITORY_ROOTS or a path outside that root (PATH_OUTSIDE_REPOSITORY),
   * a source outside its TIDEMARK_SOURCE_ROOTS (SOURCE_NOT_ALLOWED).
   */
  paths?: Refusal | null;
  /** The targets' directories: locked for this attempt, or held by another attempt. */
  lock?: 'held' | 'busy';
  /** An earlier attempt's finished copy of every disk (its manifests), or null. */
  earlier?: CompletedDiskData[] | null;
  /** The reason of a cancel heard on the bus for this job, if one was. */
  cancelHeard?: string;
}

export type Fact = 'record' | 'paths' | 'lock' | 'earlier';

export type Admission =
  /** Gather this fact, then decide again. */
  | { kind: 'need'; fact: Fact }
  /** Report the failure (the event id makes a redelivered refusal one event), acknowledge. */
  | { kind: 'refuse'; refusal: Refusal; eventId: string }
  /** The job completed already: running it again would replace a recorded backup. Acknowledge. */
  | { kind: 'ack-done'; why: string }
  /** Cancelled before it ran (the ledger has recorded it): nothing to copy. Acknowledge. */
  | { kind: 'ack-cancelled'; reason: string; cleanFirst: boolean }
  /**
   * The ledger has failed the job (its lease expired, its start came too late): it is over, and
   * a copy now would be a point in time after its end, beside any job of its chain started
   * since. Acknowledge.
   */
  | { kind: 'ack-failed'; code: string | null; cleanFirst: boolean }
  /** Not now: give the start back for redelivery after `delayMs`. */
  | { kind: 'nak-later'; delayMs: number; why: string }
  /** An earlier attempt finished copying: report its completion again, copy nothing. */
  | { kind: 'replay-finished-copy'; disks: CompletedDiskData[] }
  /** Run the client; `cleanFirst` removes what an earlier attempt of a backup left. */
  | { kind: 'run'; cleanFirst: boolean };

/** How long a start waits when the ledger cannot say whether a redelivered job completed. */
export const LEDGER_WAIT_MS = 5000;

/**
 * Whether and how a delivery of `backup.start` runs. Pure: the same facts give the same
 * decision. In order: the attempt cap; a redelivery never runs without the ledger's word that
 * it did not complete; a completed job never runs again; paths outside the repository, or
 * outside the runner's configured roots, and sources outside its source roots are refused
 * before anything is written (even a lock) or opened; another attempt's lock waits; a backup
 * whose earlier attempt finished is reported from its manifests (a completion outranks a
 * failure); a job the ledger failed or cancelled is dropped; else it runs, from a clean start
 * if an earlier attempt may have left files.
 */
export function admit(f: AdmissionFacts, lockWaitMs: number): Admission {
  if (f.attempt > f.maxAttempts)
    return {
      kind: 'refuse',
      eventId: `${f.jobId}.failed.attempts`,
      refusal: {
        code: 'TOO_MANY_ATTEMPTS',
        message: `the job was started ${f.attempt - 1} times and no runner finished it (each runner stopped or died mid-copy)`,
        retryable: false,
      },
    };
  if (f.record === undefined) return { kind: 'need', fact: 'record' };
  if (f.record === 'unavailable' && f.attempt > 1)
    return {
      kind: 'nak-later',
      delayMs: LEDGER_WAIT_MS,
      why: 'the ledger does not answer; the redelivered job waits for it',
    };
  const recorded = typeof f.record === 'object' ? f.record : null;
  if (recorded?.status === 'completed')
    return { kind: 'ack-done', why: 'job already completed; not run again' };
  if (f.paths === undefined) return { kind: 'need', fact: 'paths' };
  if (f.paths !== null)
    return { kind: 'refuse', refusal: f.paths, eventId: `${f.jobId}.failed.paths` };
  if (f.lock === undefined) return { kind: 'need', fact: 'lock' };
  if (f.lock === 'busy')
    return {
      kind: 'nak-later',
      delayMs: lockWaitMs,
      why: 'another attempt holds the targets; trying later',
    };
  const redoneBackup = f.attempt > 1 && f.jobType === 'backup';
  if (redoneBackup) {
    if (f.earlier === undefined) return { kind: 'need', fact: 'earlier' };
    if (f.earlier !== null) return { kind: 'replay-finished-copy', disks: f.earlier };
  }
  if (recorded?.status === 'failed')
    return { kind: 'ack-failed', code: recorded.errorCode, cleanFirst: redoneBackup };
  const cancelled =
    recorded?.status === 'cancelled'
      ? (recorded.errorMessage ?? 'cancelled on request')
      : f.cancelHeard;
  if (cancelled !== undefined)
    return { kind: 'ack-cancelled', reason: cancelled, cleanFirst: redoneBackup };
  return { kind: 'run', cleanFirst: redoneBackup };
}
