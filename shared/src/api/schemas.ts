// The hub's REST API wire format (v1): snake_case, every request strict (unknown fields refused).
// The hub validates requests and checks its answers with these schemas and documents them in its
// OpenAPI document; the CLI types its calls with them and checks every answer it reads.
import { z } from 'zod';
import { ByteCount, ChangeId, DiskKey, DiskSource, JobId, RecordId, VmName } from '../events/ids';
import { BackupType, backupTypes, jobTypes } from '../events/schemas';
import { jobStatuses } from '../queries';
import { RepositoryRoot } from '../system-dirs';

/** What a caller may ask for: `auto` is incremental when the VM has a usable chain head, else full. */
export const RequestedBackupType = { ...BackupType, Auto: 'auto' } as const;
export type RequestedBackupType = (typeof RequestedBackupType)[keyof typeof RequestedBackupType];
export const requestedBackupTypes = Object.values(RequestedBackupType) as [
  RequestedBackupType,
  ...RequestedBackupType[],
];

export const ErrorBody = z
  .object({
    /** One sentence. */
    error: z.string(),
    details: z.array(
      z.object({
        path: z.string().describe('Failing field, e.g. body.vm_name; empty for the whole request'),
        message: z.string(),
      }),
    ),
  })
  .meta({ id: 'Error' });

export const Health = z.object({ status: z.literal('ok') });

// --- registry -------------------------------------------------------------------------------

const VmDiskFields = {
  disk_key: DiskKey,
  driver: z.enum(['qemu']),
  path: DiskSource.describe(
    'Where the driver reads the disk: an image path, or qemu-live:<QMP socket>?node=<node>[&nbd=<NBD socket>] for a running disk',
  ),
};

const VmDisks = z
  .array(z.strictObject(VmDiskFields))
  .min(1, 'a VM needs at least one disk')
  .max(256)
  .refine(
    (disks) => new Set(disks.map((d) => d.disk_key)).size === disks.length,
    'each disk_key may appear once',
  );

export const CreateVmBody = z.strictObject({ vm_name: VmName, disks: VmDisks });

export const VmParams = z.strictObject({ vm_name: VmName });
/**
 * A VM's new disk list, in full. A disk added is copied in full by the VM's next `auto` job of
 * each chain while the others stay incremental; a disk removed is no longer copied.
 */
export const UpdateVmBody = z.strictObject({ disks: VmDisks });

export const Vm = z
  .object({
    vm_name: z.string(),
    disks: z.array(z.object({ disk_key: z.string(), driver: z.string(), path: z.string() })),
    created_at: z.string(),
  })
  .meta({ id: 'Vm' });
export const VmList = z.object({ vms: z.array(Vm) });

export const CreateRepositoryBody = z.strictObject({
  name: z.string().min(1).max(128),
  path: RepositoryRoot.describe(
    'Directory the backups are written under; not / nor a system directory (/etc, /usr, /proc, …)',
  ),
});

export const Repository = z
  .object({ id: z.string(), name: z.string(), path: z.string(), created_at: z.string() })
  .meta({ id: 'Repository' });
export const RepositoryList = z.object({ repositories: z.array(Repository) });

export const CreatePolicyBody = z.strictObject({
  name: z.string().min(1).max(128),
  schedule: z.string().min(1).max(128).nullable().optional().describe('Cron expression'),
  retention_count: z
    .number()
    .int()
    .min(1)
    .max(100000)
    .nullable()
    .optional()
    .describe('Backup points kept; null keeps all'),
});

export const Policy = z
  .object({
    id: z.string(),
    name: z.string(),
    schedule: z.string().nullable(),
    retention_count: z.number().nullable(),
    created_at: z.string(),
  })
  .meta({ id: 'Policy' });
export const PolicyList = z.object({ policies: z.array(Policy) });

// --- jobs -----------------------------------------------------------------------------------

export const StartJobBody = z.strictObject({
  vm_name: VmName,
  repository_id: RecordId,
  backup_type: z
    .enum(requestedBackupTypes)
    .describe('"auto": incremental when the VM has a completed chain head, else full'),
  policy_id: RecordId.nullable().optional(),
});

const PlannedDisk = z.object({
  disk_key: z.string(),
  previous_change_id: z.string().nullable(),
  target_path: z.string(),
  backing_path: z.string().nullable(),
  full_reason: z
    .string()
    .nullable()
    .describe('Why this disk of an incremental is planned as a full copy; null when it continues'),
});

const acceptedFields = {
  job_type: z.enum(jobTypes),
  status: z.enum(jobStatuses),
  backup_type: z.enum(backupTypes).describe('What was planned; "auto" is resolved'),
  parent_backup_id: z.string().nullable(),
  disks: z.array(PlannedDisk),
};

export const AcceptedBackup = z
  .object({ backup_id: z.string(), ...acceptedFields })
  .meta({ id: 'AcceptedBackup' });
export const AcceptedReplication = z
  .object({ job_id: z.string(), ...acceptedFields })
  .meta({ id: 'AcceptedReplication' });

const JobDisk = z.object({
  disk_key: z.string(),
  change_id: z.string().nullable().describe('Recorded when the disk is done'),
  previous_change_id: z.string().nullable(),
  bytes_transferred: z.number().nullable(),
  bytes_total: z.number().nullable(),
  target_path: z.string().nullable(),
  backing_path: z.string().nullable(),
  full_reason: z
    .string()
    .nullable()
    .describe(
      'Why this disk of an incremental was copied in full (its change_id unusable, or new to the VM); null when it continued its chain',
    ),
  canary: z
    .object({ sampled_bytes: z.number(), mismatched_bytes: z.number() })
    .nullable()
    .describe(
      'The CBT canary: bytes of blocks the change tracking called unchanged, read from the source and the chain, and how many of them differed; null when it did not run (a full copy)',
    ),
  change_tracking: z
    .enum(['trusted', 'untrusted'])
    .nullable()
    .describe(
      'untrusted when the canary found missed writes: the next job copies the disk in full; null when no canary ran',
    ),
});

const jobFields = {
  job_type: z.enum(jobTypes),
  vm_name: z.string(),
  backup_type: z.enum(backupTypes),
  repository_id: z.string(),
  policy_id: z.string().nullable(),
  parent_backup_id: z.string().nullable(),
  status: z.enum(jobStatuses),
  change_id: z.string().nullable().describe('The change_id of a one-disk job'),
  bytes_transferred: z.number().nullable(),
  error_code: z.string().nullable(),
  error_message: z.string().nullable(),
  retryable: z.boolean().nullable(),
  progress: z
    .object({
      phase: z.string(),
      sequence: z.number(),
      bytes_done: z.number(),
      bytes_total: z.number(),
      bytes_per_second: z.number(),
    })
    .nullable(),
  created_at: z.string(),
  started_at: z.string().nullable(),
  completed_at: z.string().nullable(),
  disks: z.array(JobDisk),
};

export const BackupJob = z
  .object({ backup_id: z.string(), ...jobFields })
  .meta({ id: 'BackupJob' });
export const ReplicationJob = z
  .object({ job_id: z.string(), ...jobFields })
  .meta({ id: 'ReplicationJob' });
export const BackupList = z.object({ backups: z.array(BackupJob) });

export const BackupParams = z.strictObject({ backup_id: JobId });
export const ReplicationParams = z.strictObject({ job_id: JobId });

export const ListBackupsQuery = z.strictObject({
  vm_name: VmName.optional(),
  status: z.enum(jobStatuses).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(50),
});

export const CancelJobBody = z
  .strictObject({
    /** Kept in the job's record as its error message. */
    reason: z.string().min(1).max(1024).optional(),
  })
  // No body at all reaches the schema as null.
  .nullish();

// --- compatibility --------------------------------------------------------------------------

export const CompleteBackupBody = z.strictObject({
  change_id: ChangeId,
  bytes_transferred: ByteCount,
});
export const ReplicationChangeIdBody = z.strictObject({
  change_id: ChangeId,
  bytes_transferred: ByteCount.optional(),
});
/** A request turned into an event for a job: the ledger shows its effect once it applied it. */
export const EventAccepted = z
  .object({ job_id: z.string(), job_type: z.enum(jobTypes), event_id: z.string() })
  .meta({ id: 'EventAccepted' });
