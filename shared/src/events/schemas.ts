import { z } from 'zod';
import { FailureCodeSchema, ReportedCode } from './failure-codes';
import { ByteCount, ChangeId, DirPath, DiskKey, FilePath, JobId, RecordId, VmName } from './ids';

export const JobType = { Backup: 'backup', Replication: 'replication' } as const;
export type JobType = (typeof JobType)[keyof typeof JobType];
export const jobTypes = Object.values(JobType) as [JobType, ...JobType[]];

export const BackupType = { Full: 'full', Incremental: 'incremental' } as const;
export type BackupType = (typeof BackupType)[keyof typeof BackupType];
export const backupTypes = Object.values(BackupType) as [BackupType, ...BackupType[]];

export const ProgressPhase = {
  Preparing: 'preparing',
  Copying: 'copying',
  Flushing: 'flushing',
  Finalizing: 'finalizing',
} as const;
export type ProgressPhase = (typeof ProgressPhase)[keyof typeof ProgressPhase];

/** Why a disk was copied in full inside an incremental job: a sentence for the operator. */
const FullReason = z.string().min(1).max(1024);

/** `backup.start` v1: the hub accepted a job; a runner is to copy it. */
export const StartDataV1 = z.object({
  /** VM whose disks are copied. */
  vmName: VmName,
  /** `full` copies every allocated block; `incremental` only what changed since each disk's previousChangeId. */
  backupType: z.enum(backupTypes),
  /** Repository the targets live in. */
  repositoryId: RecordId,
  /**
   * The repository's root directory; every target and backing path must lie under it (the
   * runner refuses a job whose paths leave it, symlinks resolved). Optional for publishers
   * that predate it: the runner then asks the ledger.
   */
  repositoryPath: DirPath.optional(),
  /** Policy that scheduled the job; null when started by hand. */
  policyId: RecordId.nullable().default(null),
  /** The job this one builds on; null for a full backup. */
  parentJobId: JobId.nullable().default(null),
  /**
   * What an incremental does with a disk whose previous change_id the source can no longer honour
   * (its tracking gone or inconsistent, the disk resized or replaced): `fail` the job with
   * FULL_BACKUP_REQUIRED naming the disk (the default, and an explicit `incremental`'s), or copy
   * that disk — only that one — `full` inside the same job (`auto`), saying why in the disk's
   * `fullReason`.
   */
  ifChangeIdUnusable: z.enum(['fail', 'full']).default('fail'),
  disks: z
    .array(
      z.object({
        diskKey: DiskKey,
        /** Where the driver reads the disk: a file path or a driver URI. */
        source: z.string().min(1).max(4096),
        /** change_id the incremental starts from; null for a full copy. */
        previousChangeId: ChangeId.nullable().default(null),
        /** QCOW2 file this job writes. */
        targetPath: FilePath,
        /** Backing file of the target (the parent's target); null for a full copy. */
        backingPath: FilePath.nullable().default(null),
        /**
         * Why this disk of an incremental is planned as a full copy (e.g. the disk is new to the
         * VM); null when it continues its chain, or the whole job is full.
         */
        fullReason: FullReason.nullable().default(null),
        /**
         * The change_id each chain of the VM (backups or replications, per repository) last
         * recorded for this disk, as the ledger has them: the source's tracking of those chains
         * that no head needs any more (superseded sequences, bitmaps of before chains) is cleaned
         * up when this job's completion is recorded. Empty: nothing of other chains is touched.
         */
        chainHeads: z
          .array(
            z.object({ jobType: z.enum(jobTypes), repositoryId: RecordId, changeId: ChangeId }),
          )
          .max(64)
          .default([]),
      }),
    )
    .min(1, 'a job needs at least one disk')
    .max(256),
});

/** `backup.progress` v1: at most one a second per job, plus phase changes. */
export const ProgressDataV1 = z.object({
  phase: z.enum(Object.values(ProgressPhase) as [ProgressPhase, ...ProgressPhase[]]),
  /** Monotonic per job, from 0; an event with a lower sequence than one applied is ignored. */
  sequence: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  disks: z
    .array(z.object({ diskKey: DiskKey, bytesDone: ByteCount, bytesTotal: ByteCount }))
    .max(256),
  /** Copy rate over the last interval, bytes per second. */
  bytesPerSecond: ByteCount,
});

const CompletedDisk = z.object({
  diskKey: DiskKey,
  /** The change_id of this backup point: where the next incremental of the disk starts. */
  changeId: ChangeId,
  /** Bytes of data this job copied for the disk. */
  bytesTransferred: ByteCount,
  /** File the disk was written to; null when reported by a client that does not say. */
  targetPath: FilePath.nullable().default(null),
  /** Size of the disk in bytes, when known. */
  bytesTotal: ByteCount.nullable().default(null),
  /**
   * Set when this disk of an incremental job was copied in full, and why (planned, or found by
   * the source: tracking gone, inconsistent, disk resized); its file then has no backing file.
   * Null when the disk continued its chain, or the whole job is full.
   */
  fullReason: FullReason.nullable().default(null),
  /**
   * The CBT canary of a disk that continued its chain: blocks its change tracking called
   * unchanged, read from the source and from the chain and compared. Any mismatch means the
   * tracking missed writes (the disk's next `auto` job copies it in full). Null when not run.
   */
  canary: z
    .object({
      /** Bytes sampled (read from each side). */
      sampledBytes: ByteCount,
      /** Bytes of sampled blocks that differ between the source and the chain. */
      mismatchedBytes: ByteCount,
    })
    .nullable()
    .default(null),
});

/**
 * `backup.completed` v1: every disk copied and flushed. Self-sufficient: it carries what the
 * ledger needs to record the job even if it never saw `backup.start`.
 */
export const CompletedDataV1 = z.object({
  vmName: VmName,
  backupType: z.enum(backupTypes),
  repositoryId: RecordId,
  policyId: RecordId.nullable().default(null),
  parentJobId: JobId.nullable().default(null),
  disks: z
    .array(CompletedDisk)
    .min(1, 'a completed job has at least one disk')
    .max(256)
    .refine(
      (disks) => new Set(disks.map((d) => d.diskKey)).size === disks.length,
      'each diskKey may appear once',
    ),
  /** Total bytes copied by the job. */
  bytesTransferred: ByteCount,
});

/** `backup.failed` v1. */
export const FailedDataV1 = z.object({
  /** Stable machine-readable code, e.g. `FULL_BACKUP_REQUIRED`, `CLIENT_EXITED`. */
  code: ReportedCode,
  message: z.string().min(1).max(4096),
  /** Whether running the same job again may succeed. */
  retryable: z.boolean(),
  /** Disks that did finish before the failure; their change_ids are recorded too. */
  finishedDisks: z.array(CompletedDisk).max(256).default([]),
  /** Context for a failure of a job the ledger never saw start; optional. */
  vmName: VmName.optional(),
  backupType: z.enum(backupTypes).optional(),
  repositoryId: RecordId.optional(),
});

/**
 * `backup.failed` v2: v1 with `code` one of the `FailureCode` table's. v1 stays readable: its
 * code could be any UPPER_SNAKE_CASE word, so it is upcast (`knownFailure`), not refused.
 */
export const FailedDataV2 = FailedDataV1.extend({
  /** One of `FailureCode`'s codes (README "Failure codes"). */
  code: FailureCodeSchema,
});

/**
 * `backup.cancel` v1: someone asked for the job to stop. The ledger marks a queued or running job
 * cancelled; the runner running it stops the client and removes what the attempt wrote. A copy
 * that had already finished still reports `backup.completed`, and that completion is recorded:
 * its change_ids are real backup points.
 */
export const CancelDataV1 = z.object({
  /** Why, for the job's record; null when the caller gave none. */
  reason: z.string().min(1).max(1024).nullable().default(null),
});

export const AlertKind = {
  /** The CBT canary found blocks the change tracking called unchanged that had changed. */
  ChangeTrackingUntrusted: 'CHANGE_TRACKING_UNTRUSTED',
} as const;
export type AlertKind = (typeof AlertKind)[keyof typeof AlertKind];

/**
 * `backup.alert` v1: something an operator must hear about a job that still ended as it did
 * (the job's record is unchanged by it). Published by the runner.
 */
export const AlertDataV1 = z.object({
  kind: z.enum(Object.values(AlertKind) as [AlertKind, ...AlertKind[]]),
  vmName: VmName,
  /** The disk it concerns. */
  diskKey: DiskKey,
  /** The change_id the disk's chain continued from. */
  changeId: ChangeId.nullable().default(null),
  sampledBytes: ByteCount,
  mismatchedBytes: ByteCount,
  message: z.string().min(1).max(4096),
});

export type StartData = z.output<typeof StartDataV1>;
export type ProgressData = z.output<typeof ProgressDataV1>;
export type CompletedData = z.output<typeof CompletedDataV1>;
export type CompletedDiskData = z.output<typeof CompletedDisk>;
export type FailedData = z.output<typeof FailedDataV2>;
export type CancelData = z.output<typeof CancelDataV1>;
export type AlertData = z.output<typeof AlertDataV1>;
