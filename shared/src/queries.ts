import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import {
  ConflictError,
  ErrorCode,
  NotFoundError,
  TidemarkError,
  UnavailableError,
  ValidationError,
  type FieldIssue,
} from './errors';
import { ReportedCode } from './events/failure-codes';
import { DiskKey, DiskSource, JobId, RecordId, VmName } from './events/ids';
import {
  CompletedDataV1,
  StartDataV1,
  jobTypes,
  type BackupType,
  type JobType,
} from './events/schemas';
import { RepositoryRoot } from './system-dirs';
import type { BusTopology } from './nats/topology';
import { parseOrThrow } from './validate';

export const JobStatus = {
  Queued: 'queued',
  Running: 'running',
  Completed: 'completed',
  Failed: 'failed',
  Cancelled: 'cancelled',
} as const;
export type JobStatus = (typeof JobStatus)[keyof typeof JobStatus];
export const jobStatuses = Object.values(JobStatus) as [JobStatus, ...JobStatus[]];

/** A job as the ledger reports it (over NATS; the hub renders it in snake_case). */
export interface JobView {
  jobId: string;
  jobType: JobType;
  vmName: string;
  backupType: BackupType;
  repositoryId: string;
  policyId: string | null;
  parentJobId: string | null;
  status: JobStatus;
  /** The change_id of a one-disk job; null for several disks (see `disks`). */
  changeId: string | null;
  bytesTransferred: number | null;
  errorCode: string | null;
  errorMessage: string | null;
  retryable: boolean | null;
  progress: {
    phase: string;
    sequence: number;
    bytesDone: number;
    bytesTotal: number;
    bytesPerSecond: number;
  } | null;
  createdAt: string;
  startedAt: string | null;
  completedAt: string | null;
  disks: DiskView[];
}

export interface DiskView {
  diskKey: string;
  source: string | null;
  changeId: string | null;
  previousChangeId: string | null;
  bytesTransferred: number | null;
  bytesTotal: number | null;
  targetPath: string | null;
  backingPath: string | null;
  /**
   * Why this disk of an incremental job was copied in full (its change_id was unusable, or it
   * is new to the VM); null when it continued its chain, or the whole job is full.
   */
  fullReason: string | null;
  /** The CBT canary of a disk that continued its chain; null when it did not run. */
  canary: { sampledBytes: number; mismatchedBytes: number } | null;
  /**
   * `untrusted` when the canary found blocks the tracking called unchanged that had changed:
   * the disk's next job copies it in full. Null when no canary ran.
   */
  changeTracking: 'trusted' | 'untrusted' | null;
}

export interface RepositoryView {
  id: string;
  name: string;
  path: string;
  createdAt: string;
}

export interface PolicyView {
  id: string;
  name: string;
  /** Cron expression, or null for a policy started by hand. */
  schedule: string | null;
  /** Backup points to keep, or null to keep all. */
  retentionCount: number | null;
  createdAt: string;
}

export interface VmView {
  vmName: string;
  disks: { diskKey: string; driver: string; path: string }[];
  createdAt: string;
}

const Name = z.string().min(1).max(128);

/** A VM's disks, each key once. */
const VmDisks = z
  .array(z.object({ diskKey: DiskKey, driver: z.enum(['qemu']), path: DiskSource }))
  .min(1)
  .max(256)
  .refine(
    (d) => new Set(d.map((x) => x.diskKey)).size === d.length,
    'each disk_key may appear once',
  );

/** Every ledger query: its request schema and the type of its result. */
export const querySchemas = {
  'jobs.create': z.object({ jobId: JobId, jobType: z.enum(jobTypes) }).extend(StartDataV1.shape),
  /** Fails a job that never ran, e.g. one whose backup.start could not be published. */
  'jobs.fail': z.object({
    jobId: JobId,
    /** Read as a `backup.failed` v1 code is: one outside the table is kept as CLIENT_FAILED. */
    code: ReportedCode,
    message: z.string().min(1).max(4096),
    retryable: z.boolean(),
  }),
  /**
   * Records a completion reported over REST by an old client (the hub's compatibility routes):
   * the ledger applies it as the `backup.completed` event `eventId`, exactly as if it had come
   * over the bus, so the hub never needs to publish completions itself.
   */
  'jobs.complete': z.object({
    jobId: JobId,
    eventId: z.string().min(1).max(128),
    data: CompletedDataV1,
  }),
  'jobs.get': z.object({ jobId: JobId }),
  'jobs.list': z.object({
    vmName: VmName.optional(),
    jobType: z.enum(jobTypes).optional(),
    status: z.enum(jobStatuses).optional(),
    limit: z.number().int().min(1).max(1000).default(50),
  }),
  /**
   * The head of a chain: the completed job of the VM and job type (in the repository, when
   * given) that the ledger recorded last.
   */
  'chain-head': z.object({
    vmName: VmName,
    jobType: z.enum(jobTypes).default('backup'),
    repositoryId: RecordId.optional(),
  }),
  /** The head of every chain of a VM: one per job type and repository (at most 64). */
  'chain-heads': z.object({ vmName: VmName }),
  /** Refuses `/` and system directories as a repository's root (`RepositoryRoot`). */
  'repositories.create': z.object({ name: Name, path: RepositoryRoot }),
  'repositories.get': z.object({ id: RecordId }),
  'repositories.list': z.object({}),
  'policies.create': z.object({
    name: Name,
    schedule: z.string().min(1).max(128).nullable().default(null),
    retentionCount: z.number().int().min(1).max(100000).nullable().default(null),
  }),
  'policies.list': z.object({}),
  'vms.create': z.object({ vmName: VmName, disks: VmDisks }),
  /** Replaces a registered VM's disk list (its jobs keep the disks they were planned with). */
  'vms.update': z.object({ vmName: VmName, disks: VmDisks }),
  'vms.get': z.object({ vmName: VmName }),
  'vms.list': z.object({}),
} as const;

export interface QueryResults {
  'jobs.create': JobView;
  'jobs.fail': JobView;
  'jobs.complete': JobView;
  'jobs.get': JobView;
  'jobs.list': JobView[];
  'chain-head': JobView | null;
  'chain-heads': JobView[];
  'repositories.create': RepositoryView;
  'repositories.get': RepositoryView;
  'repositories.list': RepositoryView[];
  'policies.create': PolicyView;
  'policies.list': PolicyView[];
  'vms.create': VmView;
  'vms.update': VmView;
  'vms.get': VmView;
  'vms.list': VmView[];
}

export type QueryName = keyof typeof querySchemas;
export const queryNames = Object.keys(querySchemas) as QueryName[];
export type QueryRequest<Q extends QueryName> = z.input<(typeof querySchemas)[Q]>;
export type QueryInput<Q extends QueryName> = z.output<(typeof querySchemas)[Q]>;

export type QueryReply<R> =
  | { ok: true; result: R }
  | { ok: false; error: { code: string; message: string; issues: FieldIssue[] } };

/** Decodes and validates a query request (throws ValidationError naming the field). */
export function parseQuery<Q extends QueryName>(name: Q, body: unknown): QueryInput<Q> {
  return parseOrThrow(querySchemas[name], body, `${name} request`) as QueryInput<Q>;
}

/** Asks the ledger; its error replies come back as the matching TidemarkError subclass. */
export async function askLedger<Q extends QueryName>(
  nc: NatsConnection,
  topo: BusTopology,
  name: Q,
  request: QueryRequest<Q>,
  timeoutMs = 5000,
): Promise<QueryResults[Q]> {
  let raw: string;
  try {
    const reply = await nc.request(topo.querySubject(name), JSON.stringify(request), {
      timeout: timeoutMs,
    });
    raw = reply.string();
  } catch (err) {
    throw new UnavailableError(`the ledger did not answer ${name}: ${String(err)}`, { cause: err });
  }
  const reply = JSON.parse(raw) as QueryReply<QueryResults[Q]>;
  if (reply.ok) return reply.result;
  const { code, message, issues } = reply.error;
  switch (code) {
    case ErrorCode.Validation:
      throw new ValidationError(message, issues);
    case ErrorCode.NotFound:
      throw new NotFoundError(message, issues);
    case ErrorCode.Conflict:
      throw new ConflictError(message, issues);
    case ErrorCode.Unavailable:
      throw new UnavailableError(message);
    default:
      throw new TidemarkError(ErrorCode.Internal, message, issues);
  }
}
