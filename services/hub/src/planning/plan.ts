import {
  api,
  BackupType,
  ConflictError,
  JobType,
  type DiskView,
  type JobView,
  type RepositoryView,
  type StartData,
  type VmView,
} from '@tidemark/shared';

/** What a caller may ask for (the REST contract's `backup_type`): full, incremental or auto. */
export const RequestedBackupType = api.RequestedBackupType;
export type RequestedBackupType = api.RequestedBackupType;

export interface PlanRequest {
  jobId: string;
  jobType: JobType;
  requested: RequestedBackupType;
  vm: VmView;
  repository: RepositoryView;
  /** The head of the chain this job continues (ledger order); null when none, or a full. */
  chainHead: JobView | null;
  /** The heads of every chain of the VM (any job type and repository); none when not known. */
  chainHeads?: JobView[];
  policyId: string | null;
}

/**
 * Plans a job: its type, parent and, per disk of the VM, where it is read, where it is written
 * and which change_id it starts from. Pure: the same request always gives the same plan. The
 * result is the data of the job's `backup.start` (and of the ledger's `jobs.create`).
 *
 * Throws ConflictError for an incremental that has nothing to build on.
 */
export function planJob(req: PlanRequest): StartData {
  const base = continuation(req);
  if (req.requested === RequestedBackupType.Incremental && !base.ok) {
    throw new ConflictError(`no incremental ${req.jobType} possible: ${base.why}`, [
      { path: 'backupType', message: `${base.why}; ask for a full ${req.jobType} (or "auto")` },
    ]);
  }
  const head = req.requested !== RequestedBackupType.Full && base.ok ? base.head : null;
  return {
    vmName: req.vm.vmName,
    backupType: head ? BackupType.Incremental : BackupType.Full,
    repositoryId: req.repository.id,
    repositoryPath: repositoryRoot(req.repository.path),
    policyId: req.policyId,
    parentJobId: head?.jobId ?? null,
    // `auto` always makes progress: a disk whose change_id the source cannot honour is copied in
    // full inside the job. An explicit incremental fails instead, naming the disk.
    ifChangeIdUnusable: req.requested === RequestedBackupType.Auto ? 'full' : 'fail',
    disks: req.vm.disks.map((disk) => {
      const from = head ? continuingDisk(req.jobType, head, disk.diskKey) : null;
      const untrusted = head?.disks.find(
        (d) => d.diskKey === disk.diskKey && d.changeTracking === 'untrusted',
      );
      return {
        diskKey: disk.diskKey,
        source: disk.path,
        previousChangeId: from?.changeId ?? null,
        targetPath: targetPath(req, disk.diskKey),
        // A replica is updated in place; a backup's overlay is backed by its parent's file.
        backingPath: req.jobType === JobType.Backup ? (from?.targetPath ?? null) : null,
        chainHeads: (req.chainHeads ?? []).flatMap((h) => {
          const changeId = h.disks.find((d) => d.diskKey === disk.diskKey)?.changeId ?? null;
          return changeId === null
            ? []
            : [{ jobType: h.jobType, repositoryId: h.repositoryId, changeId }];
        }),
        fullReason: untrusted
          ? `the CBT canary of the chain head ${head?.jobId} found ${untrusted.canary?.mismatchedBytes} bytes that disk ${disk.diskKey}'s change tracking missed: its tracking is not trusted`
          : head && !from
            ? `the chain head ${head.jobId} recorded no change_id for disk ${disk.diskKey} (a disk new to the VM, or one that did not finish)`
            : null,
      };
    }),
  };
}

/** The repository's directory without a trailing slash ("/" stays "/"). */
function repositoryRoot(path: string): string {
  return path.replace(/(.)\/+$/, '$1');
}

/**
 * Backups: `<repository>/<vm>/<job id>/<disk key>.qcow2`, one new file per job.
 * Replications: `<repository>/<vm>/replica/<disk key>.qcow2`, one replica per disk for good.
 */
export function targetPath(
  req: Pick<PlanRequest, 'jobId' | 'jobType' | 'vm' | 'repository'>,
  diskKey: string,
): string {
  const root = repositoryRoot(req.repository.path).replace(/^\/$/, '');
  const dir = req.jobType === JobType.Backup ? req.jobId : 'replica';
  return `${root}/${req.vm.vmName}/${dir}/${diskKey}.qcow2`;
}

type Continuation = { ok: true; head: JobView } | { ok: false; why: string };

/** Whether the chain head can be built on: same repository, and at least one disk continues. */
function continuation(req: PlanRequest): Continuation {
  const head = req.chainHead;
  const vm = req.vm.vmName;
  if (!head) return { ok: false, why: `VM ${vm} has no completed ${req.jobType}` };
  if (head.repositoryId !== req.repository.id) {
    return {
      ok: false,
      why:
        `the last completed ${req.jobType} of VM ${vm} (${head.jobId}) is in repository ` +
        `${head.repositoryId}, not ${req.repository.id}`,
    };
  }
  if (!req.vm.disks.some((d) => continuingDisk(req.jobType, head, d.diskKey))) {
    return {
      ok: false,
      why: `the last completed ${req.jobType} of VM ${vm} (${head.jobId}) recorded no change_id for its disks`,
    };
  }
  return { ok: true, head };
}

/**
 * The chain head's record of a disk, when the disk can continue from it: a change_id, and for a
 * backup the file a new overlay can be backed by. Any other disk is copied in full.
 */
function continuingDisk(
  jobType: JobType,
  head: JobView,
  diskKey: string,
): (DiskView & { changeId: string }) | null {
  const disk = head.disks.find((d) => d.diskKey === diskKey);
  // Tracking that missed writes (the canary saw it) is never built on.
  if (!disk || disk.changeId === null || disk.changeTracking === 'untrusted') return null;
  if (jobType === JobType.Backup && disk.targetPath === null) return null;
  return { ...disk, changeId: disk.changeId };
}
