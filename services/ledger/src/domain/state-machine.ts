import type {
  AnyEvent,
  CompletedDiskData,
  FailureCode,
  FieldIssue,
  JobType,
  TidemarkEvent,
} from '@tidemark/shared';
import { cloneJob, isActive, type DiskRecord, type JobRecord } from './job';

/** What the rest of the ledger knows, looked up before the state machine runs. */
export interface ApplyContext {
  repositoryExists(id: string): boolean;
  policyExists(id: string): boolean;
  jobExists(id: string): boolean;
  /** The active (queued or running) job of a VM and job type, if any. */
  activeJobOf(vmName: string, jobType: JobType): string | null;
  /** When the bus took the event (its stream timestamp); the event's own time when unknown. */
  heardAt(event: AnyEvent): Date;
}

export const RejectCode = {
  NotFound: 'NOT_FOUND',
  Conflict: 'CONFLICT',
  Invalid: 'INVALID',
} as const;
export type RejectCode = (typeof RejectCode)[keyof typeof RejectCode];

export type Decision =
  /** The job's new state; write it, and the event counts as applied. */
  | { kind: 'apply'; job: JobRecord; note: string }
  /** Nothing to change (a duplicate, a stale progress, a late event); the event counts as applied. */
  | { kind: 'ignore'; why: string }
  /** The event can never be applied as it is: dead-letter it with this reason. */
  | { kind: 'reject'; code: RejectCode; reason: string; issues: FieldIssue[] }
  /** The job is not known yet (its start may still be on its way): try again later. */
  | { kind: 'defer'; why: string };

/**
 * The one place job state changes. Status moves one way: queued → running → completed | failed
 * | cancelled. Pure: the same job, event and context always give the same decision.
 */
export function decide(job: JobRecord | null, event: AnyEvent, ctx: ApplyContext): Decision {
  if (job && job.jobType !== event.jobType) {
    return reject(
      'CONFLICT',
      `job ${event.jobId} is a ${job.jobType} job, not a ${event.jobType} job`,
      'jobType',
    );
  }
  switch (event.type) {
    case 'backup.start':
      return onStart(job, event, ctx);
    case 'backup.progress':
      return onProgress(job, event, ctx);
    case 'backup.completed':
      return onCompleted(job, event, ctx);
    case 'backup.failed':
      return onFailed(job, event, ctx);
    case 'backup.cancel':
      return onCancel(job, event);
    case 'backup.alert':
      // For operators (notifications, dashboards); what it reports is already in the job's
      // record, from the completion that carried the canary's figures.
      return { kind: 'ignore', why: 'an alert changes no job' };
    default: {
      const unknown: never = event;
      return reject('INVALID', `unknown event type ${(unknown as AnyEvent).type}`, 'type');
    }
  }
}

function reject(code: RejectCode, reason: string, path: string): Decision {
  return { kind: 'reject', code, reason, issues: [{ path, message: reason }] };
}

function checkReferences(
  data: { repositoryId: string; policyId: string | null; parentJobId: string | null },
  ctx: ApplyContext,
): Decision | null {
  if (!ctx.repositoryExists(data.repositoryId)) {
    return reject(
      'NOT_FOUND',
      `repository ${data.repositoryId} does not exist`,
      'data.repositoryId',
    );
  }
  if (data.policyId !== null && !ctx.policyExists(data.policyId)) {
    return reject('NOT_FOUND', `policy ${data.policyId} does not exist`, 'data.policyId');
  }
  if (data.parentJobId !== null && !ctx.jobExists(data.parentJobId)) {
    return reject('NOT_FOUND', `parent job ${data.parentJobId} does not exist`, 'data.parentJobId');
  }
  return null;
}

function onStart(
  job: JobRecord | null,
  event: TidemarkEvent<'backup.start'>,
  ctx: ApplyContext,
): Decision {
  const d = event.data;
  if (d.backupType === 'full' && d.parentJobId !== null) {
    return reject('INVALID', 'a full backup has no parent job', 'data.parentJobId');
  }
  if (job) {
    if (job.vmName !== d.vmName) {
      return reject(
        'CONFLICT',
        `job ${job.jobId} belongs to VM ${job.vmName}, not ${d.vmName}`,
        'data.vmName',
      );
    }
    // The job is known (created by the hub's request, or its completion came first): the start
    // adds only what the record lacks, and never moves the status.
    const next = cloneJob(job);
    let added = false;
    for (const disk of d.disks) {
      const known = next.disks.get(disk.diskKey);
      if (!known) continue;
      for (const key of [
        'source',
        'previousChangeId',
        'targetPath',
        'backingPath',
        'fullReason',
      ] as const) {
        if (known[key] === null && disk[key] !== null) {
          known[key] = disk[key];
          added = true;
        }
      }
    }
    return added
      ? { kind: 'apply', job: next, note: 'start merged into known job' }
      : { kind: 'ignore', why: 'job already recorded' };
  }
  const refs = checkReferences(d, ctx);
  if (refs) return refs;
  const active = ctx.activeJobOf(d.vmName, event.jobType);
  if (active !== null) {
    return reject(
      'CONFLICT',
      `VM ${d.vmName} already has an active ${event.jobType} job ${active}`,
      'data.vmName',
    );
  }
  const disks = new Map<string, DiskRecord>();
  for (const disk of d.disks) {
    if (disks.has(disk.diskKey)) {
      return reject('INVALID', `disk ${disk.diskKey} is listed twice`, 'data.disks');
    }
    disks.set(disk.diskKey, {
      diskKey: disk.diskKey,
      source: disk.source,
      changeId: null,
      previousChangeId: disk.previousChangeId,
      bytesTransferred: null,
      bytesTotal: null,
      targetPath: disk.targetPath,
      backingPath: disk.backingPath,
      fullReason: disk.fullReason,
      canary: null,
    });
  }
  return {
    kind: 'apply',
    note: 'job queued',
    job: newJob(
      event,
      {
        vmName: d.vmName,
        backupType: d.backupType,
        repositoryId: d.repositoryId,
        policyId: d.policyId,
        parentJobId: d.parentJobId,
      },
      disks,
    ),
  };
}

/** A queued job as an event first describes it; the caller then applies the event to it. */
function newJob(
  event: AnyEvent,
  fields: Pick<JobRecord, 'vmName' | 'backupType' | 'repositoryId' | 'policyId' | 'parentJobId'>,
  disks: Map<string, DiskRecord> = new Map(),
): JobRecord {
  return {
    jobId: event.jobId,
    jobType: event.jobType,
    ...fields,
    status: 'queued',
    changeId: null,
    bytesTransferred: null,
    errorCode: null,
    errorMessage: null,
    retryable: null,
    progress: null,
    createdAt: new Date(event.occurredAt),
    startedAt: null,
    completedAt: null,
    completionSeq: null,
    heartbeatAt: null,
    disks,
  };
}

function onProgress(
  job: JobRecord | null,
  event: TidemarkEvent<'backup.progress'>,
  ctx: ApplyContext,
): Decision {
  if (!job) return { kind: 'defer', why: `job ${event.jobId} is not known yet` };
  if (!isActive(job.status)) return { kind: 'ignore', why: `job is already ${job.status}` };
  const d = event.data;
  if (job.progress && d.sequence <= job.progress.sequence) {
    return {
      kind: 'ignore',
      why: `progress ${d.sequence} is not newer than ${job.progress.sequence}`,
    };
  }
  const next = cloneJob(job);
  if (next.status === 'queued') {
    next.status = 'running';
    next.startedAt = new Date(event.occurredAt);
  }
  let bytesDone = 0;
  let bytesTotal = 0;
  for (const disk of d.disks) {
    bytesDone += disk.bytesDone;
    bytesTotal += disk.bytesTotal;
    const known = next.disks.get(disk.diskKey);
    if (known) known.bytesTotal = disk.bytesTotal;
  }
  next.heartbeatAt = ctx.heardAt(event);
  next.progress = {
    phase: d.phase,
    sequence: d.sequence,
    bytesDone,
    bytesTotal,
    bytesPerSecond: d.bytesPerSecond,
  };
  return { kind: 'apply', job: next, note: `progress ${d.sequence}` };
}

/** The error code a cancelled job carries. */
export const CANCELLED = 'CANCELLED' satisfies FailureCode;

function onCompleted(
  job: JobRecord | null,
  event: TidemarkEvent<'backup.completed'>,
  ctx: ApplyContext,
): Decision {
  const d = event.data;
  let next: JobRecord;
  if (!job) {
    // Completion before (or without) start: the event carries enough to record the whole job.
    const refs = checkReferences(d, ctx);
    if (refs) return refs;
    next = newJob(event, {
      vmName: d.vmName,
      backupType: d.backupType,
      repositoryId: d.repositoryId,
      policyId: d.policyId,
      parentJobId: d.parentJobId,
    });
  } else {
    if (job.status === 'completed') {
      // The same completion again changes nothing. A different one is kept as a dead letter:
      // never swallow a change_id silently.
      const differing = d.disks.filter((x) => job.disks.get(x.diskKey)?.changeId !== x.changeId);
      if (differing.length === 0) return { kind: 'ignore', why: 'job already completed' };
      const recorded = differing.map(
        (x) => `${x.diskKey}=${job.disks.get(x.diskKey)?.changeId ?? 'none'}`,
      );
      return reject(
        'CONFLICT',
        `job ${job.jobId} already completed with change_id ${recorded.join(', ')}; this completion reports ${differing
          .map((x) => `${x.diskKey}=${x.changeId}`)
          .join(', ')}`,
        'data.disks',
      );
    }
    // A real completion outranks any failure or cancel that was not itself a completion
    // (presumed by the reaper, an attempt cap, an interrupted attempt, a cancel that came after
    // the copy finished): its change_ids are real backup points, and refusing them would cost
    // the next job its incremental. The runner commits the new change tracking only once this
    // is recorded.
    if (job.vmName !== d.vmName) {
      return reject(
        'CONFLICT',
        `job ${job.jobId} belongs to VM ${job.vmName}, not ${d.vmName}`,
        'data.vmName',
      );
    }
    const reported = new Set(d.disks.map((x) => x.diskKey));
    const missing = [...job.disks.keys()].filter((k) => !reported.has(k));
    if (missing.length > 0) {
      return reject(
        'INVALID',
        `completion lacks the change_id of disk ${missing.join(', ')}`,
        'data.disks',
      );
    }
    const unknown = [...reported].filter((k) => !job.disks.has(k));
    if (unknown.length > 0) {
      return reject('INVALID', `job ${job.jobId} has no disk ${unknown.join(', ')}`, 'data.disks');
    }
    next = cloneJob(job);
  }
  for (const disk of d.disks) recordDisk(next, disk);
  next.status = 'completed';
  next.changeId = next.disks.size === 1 ? [...next.disks.values()][0].changeId : null;
  next.bytesTransferred = d.bytesTransferred;
  next.errorCode = null;
  next.errorMessage = null;
  next.retryable = null;
  next.startedAt ??= new Date(event.occurredAt);
  next.completedAt = new Date(event.occurredAt);
  return { kind: 'apply', job: next, note: 'job completed' };
}

function recordDisk(job: JobRecord, disk: CompletedDiskData): void {
  const known = job.disks.get(disk.diskKey);
  job.disks.set(disk.diskKey, {
    diskKey: disk.diskKey,
    source: known?.source ?? null,
    previousChangeId: known?.previousChangeId ?? null,
    changeId: disk.changeId,
    bytesTransferred: disk.bytesTransferred,
    bytesTotal: disk.bytesTotal ?? known?.bytesTotal ?? null,
    targetPath: disk.targetPath ?? known?.targetPath ?? null,
    // A disk of a backup copied in full stands alone: its file has no backing file.
    backingPath:
      disk.fullReason !== null && job.jobType === 'backup' ? null : (known?.backingPath ?? null),
    fullReason: disk.fullReason ?? known?.fullReason ?? null,
    canary: disk.canary ?? known?.canary ?? null,
  });
}

function onFailed(
  job: JobRecord | null,
  event: TidemarkEvent<'backup.failed'>,
  ctx: ApplyContext,
): Decision {
  const d = event.data;
  let next: JobRecord;
  if (!job) {
    if (!d.vmName || !d.backupType || !d.repositoryId) {
      return {
        kind: 'defer',
        why: `job ${event.jobId} is not known yet and the failure lacks vmName, backupType or repositoryId`,
      };
    }
    const refs = checkReferences(
      { repositoryId: d.repositoryId, policyId: null, parentJobId: null },
      ctx,
    );
    if (refs) return refs;
    next = newJob(event, {
      vmName: d.vmName,
      backupType: d.backupType,
      repositoryId: d.repositoryId,
      policyId: null,
      parentJobId: null,
    });
  } else {
    if (!isActive(job.status)) return { kind: 'ignore', why: `job already ended as ${job.status}` };
    next = cloneJob(job);
  }
  // Disks that finished before the failure keep their change_ids: they are real backup points.
  for (const disk of d.finishedDisks) recordDisk(next, disk);
  // A runner that stopped a job on a cancel the ledger has not seen (yet) says so with this code.
  next.status = d.code === CANCELLED ? 'cancelled' : 'failed';
  next.errorCode = d.code;
  next.errorMessage = d.message;
  next.retryable = d.retryable;
  next.completedAt = new Date(event.occurredAt);
  return { kind: 'apply', job: next, note: `job failed: ${d.code}` };
}

function onCancel(job: JobRecord | null, event: TidemarkEvent<'backup.cancel'>): Decision {
  // The hub publishes a cancel only for a job the ledger knows; an unknown one is a start still
  // on its way (or a stranger's event, which ends as a dead letter after the deferrals).
  if (!job) return { kind: 'defer', why: `job ${event.jobId} is not known yet` };
  if (!isActive(job.status)) return { kind: 'ignore', why: `job already ended as ${job.status}` };
  const next = cloneJob(job);
  next.status = 'cancelled';
  next.errorCode = CANCELLED;
  next.errorMessage = event.data.reason ?? 'cancelled on request';
  next.retryable = false;
  next.completedAt = new Date(event.occurredAt);
  return { kind: 'apply', job: next, note: 'job cancelled' };
}
