// A small typed client of the hub's REST API v1: one function per route, wire types as sent
// (snake_case). Nothing here prints; errors are ApiError (the hub answered with an error) or
// HubUnreachableError (it did not answer).

export const JobStatus = {
  Queued: 'queued',
  Running: 'running',
  Completed: 'completed',
  Failed: 'failed',
  Cancelled: 'cancelled',
} as const;
export type JobStatus = (typeof JobStatus)[keyof typeof JobStatus];
export const jobStatuses = Object.values(JobStatus);

/** `auto` lets the hub choose: incremental when the VM has a completed chain head, else full. */
export const requestedBackupTypes = ['full', 'incremental', 'auto'] as const;
export type RequestedBackupType = (typeof requestedBackupTypes)[number];
export type BackupType = 'full' | 'incremental';
export type JobType = 'backup' | 'replication';

export interface VmDisk {
  disk_key: string;
  driver: 'qemu';
  /** Where the driver reads the disk: a file path or a driver URI. */
  path: string;
}

export interface Vm {
  vm_name: string;
  disks: VmDisk[];
  created_at: string;
}

export interface Repository {
  id: string;
  name: string;
  path: string;
  created_at: string;
}

export interface Policy {
  id: string;
  name: string;
  /** Cron expression; null when the policy is only used by hand. */
  schedule: string | null;
  /** Backups kept; null for no limit. */
  retention_count: number | null;
  created_at: string;
}

export interface NewPolicy {
  name: string;
  schedule?: string | null;
  retention_count?: number | null;
}

/** Body of `POST /api/v1/backups` and `POST /api/v1/replications`. */
export interface StartJobRequest {
  vm_name: string;
  repository_id: string;
  backup_type: RequestedBackupType;
  policy_id?: string;
}

export interface PlannedDisk {
  disk_key: string;
  /** change_id the incremental starts from; null for a full copy. */
  previous_change_id: string | null;
  target_path: string;
  backing_path: string | null;
}

interface AcceptedFields {
  job_type: JobType;
  status: JobStatus;
  /** What the hub chose: `auto` is resolved here. */
  backup_type: BackupType;
  parent_backup_id: string | null;
  disks: PlannedDisk[];
}
/** 202 answer of `POST /api/v1/backups`. */
export type AcceptedBackup = AcceptedFields & { backup_id: string };
/** 202 answer of `POST /api/v1/replications`. */
export type AcceptedReplication = AcceptedFields & { job_id: string };

export interface JobProgress {
  phase: string;
  sequence: number;
  bytes_done: number;
  bytes_total: number;
  bytes_per_second: number;
}

export interface JobDisk {
  disk_key: string;
  /** The change_id this job recorded for the disk; null until the disk is done. */
  change_id: string | null;
  previous_change_id: string | null;
  bytes_transferred: number | null;
  bytes_total: number | null;
  target_path: string | null;
  backing_path: string | null;
}

interface JobFields {
  job_type: JobType;
  vm_name: string;
  backup_type: BackupType;
  repository_id: string;
  policy_id: string | null;
  parent_backup_id: string | null;
  status: JobStatus;
  change_id: string | null;
  bytes_transferred: number | null;
  error_code: string | null;
  error_message: string | null;
  retryable: boolean | null;
  progress: JobProgress | null;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  disks: JobDisk[];
}
/** `GET /api/v1/backups/{id}` (either job type; job_type says which). */
export type BackupJob = JobFields & { backup_id: string };
/** `GET /api/v1/replications/{id}`. */
export type ReplicationJob = JobFields & { job_id: string };
export type Job = BackupJob | ReplicationJob;

export interface BackupFilter {
  vm_name?: string;
  status?: JobStatus;
  limit?: number;
}

/** The id of a job or accepted job, whichever key its route uses. */
export function jobIdOf(job: { backup_id: string } | { job_id: string }): string {
  return 'backup_id' in job ? job.backup_id : job.job_id;
}

export function isFinished(status: JobStatus): boolean {
  return (
    status === JobStatus.Completed || status === JobStatus.Failed || status === JobStatus.Cancelled
  );
}

/** One entry of an error answer's `details`. */
export interface ApiErrorDetail {
  /** Field path, e.g. `body.vm_name`. */
  path: string;
  message: string;
}

/** The hub answered with an error status; `message` is its `error` sentence. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    message: string,
    readonly details: ApiErrorDetail[] = [],
    /** From `Retry-After` on a 503: the hub's dependencies did not answer. */
    readonly retryAfterSeconds: number | null = null,
  ) {
    super(message);
  }
}

/** No HTTP answer at all: connection refused, DNS failure, timeout. */
export class HubUnreachableError extends Error {
  override name = 'HubUnreachableError';
  constructor(
    readonly url: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`could not reach the hub at ${url}: ${reason}`, options);
  }
}

export interface HubApi {
  createVm(vm: { vm_name: string; disks: VmDisk[] }): Promise<Vm>;
  listVms(): Promise<{ vms: Vm[] }>;
  createRepository(repo: { name: string; path: string }): Promise<Repository>;
  listRepositories(): Promise<{ repositories: Repository[] }>;
  createPolicy(policy: NewPolicy): Promise<Policy>;
  listPolicies(): Promise<{ policies: Policy[] }>;
  startBackup(request: StartJobRequest): Promise<AcceptedBackup>;
  getBackup(backupId: string): Promise<Job>;
  listBackups(filter?: BackupFilter): Promise<{ backups: BackupJob[] }>;
  startReplication(request: StartJobRequest): Promise<AcceptedReplication>;
  getReplication(jobId: string): Promise<ReplicationJob>;
  /** Asks for a queued or running job to stop (409 once it has ended). */
  cancelJob(jobType: JobType, jobId: string, reason?: string): Promise<CancelAccepted>;
}

/** The 202 answer to a cancel: the job shows `cancelled` once the ledger applied the event. */
export interface CancelAccepted {
  job_id: string;
  job_type: JobType;
  event_id: string;
}

export interface HubApiOptions {
  /** Base URL, e.g. `http://127.0.0.1:8082`; a path prefix is kept. */
  url: string;
  /** Sent as `Authorization: Bearer <token>` when set. */
  token?: string;
  /** Per request; default 30 s. */
  timeoutMs?: number;
  /** Default: the global fetch. */
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
}

export function createHubApi(options: HubApiOptions): HubApi {
  const base = options.url.replace(/\/+$/, '');
  const shownUrl = withoutCredentials(options.url);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const doFetch = options.fetch ?? ((url, init) => fetch(url, init));

  async function request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    let text: string;
    try {
      res = await doFetch(`${base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      text = await res.text();
    } catch (err) {
      throw new HubUnreachableError(shownUrl, unreachableReason(err, timeoutMs), { cause: err });
    }
    const parsed = parseJson(text);
    if (!res.ok) throw errorFromAnswer(res, parsed);
    if (parsed === undefined) {
      throw new ApiError(res.status, `the hub at ${shownUrl} answered ${path} with no JSON`);
    }
    return parsed as T;
  }

  const id = (value: string) => encodeURIComponent(value);
  return {
    createVm: (vm) => request('POST', '/api/v1/vms', vm),
    listVms: () => request('GET', '/api/v1/vms'),
    createRepository: (repo) => request('POST', '/api/v1/repositories', repo),
    listRepositories: () => request('GET', '/api/v1/repositories'),
    createPolicy: (policy) => request('POST', '/api/v1/policies', policy),
    listPolicies: () => request('GET', '/api/v1/policies'),
    startBackup: (req) => request('POST', '/api/v1/backups', req),
    getBackup: (backupId) => request('GET', `/api/v1/backups/${id(backupId)}`),
    listBackups: (filter = {}) => request('GET', `/api/v1/backups${query(filter)}`),
    startReplication: (req) => request('POST', '/api/v1/replications', req),
    getReplication: (jobId) => request('GET', `/api/v1/replications/${id(jobId)}`),
    cancelJob: (jobType, jobId, reason) =>
      request(
        'POST',
        `/api/v1/${jobType === 'backup' ? 'backups' : 'replications'}/${id(jobId)}/cancel`,
        reason === undefined ? {} : { reason },
      ),
  };
}

function query(filter: BackupFilter): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(filter)) {
    if (value !== undefined) params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The contract's `{ error, details }`; anything else still yields a readable error. */
function errorFromAnswer(res: Response, body: unknown): ApiError {
  const record = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
  const message =
    typeof record.error === 'string' && record.error
      ? record.error
      : `the hub answered ${res.status} ${res.statusText}`.trim();
  const details = Array.isArray(record.details)
    ? record.details
        .filter((d): d is Record<string, unknown> => typeof d === 'object' && d !== null)
        .map((d) => ({ path: String(d.path ?? ''), message: String(d.message ?? '') }))
    : [];
  const retryAfter = Number(res.headers.get('retry-after'));
  return new ApiError(
    res.status,
    message,
    details,
    Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
  );
}

const socketErrors: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
};

function unreachableReason(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && err.name === 'TimeoutError') {
    return `no answer within ${timeoutMs / 1000} s`;
  }
  // undici puts the socket error (ECONNREFUSED, ENOTFOUND, ...) in `cause`.
  const cause = err instanceof Error ? (err.cause as { code?: unknown; message?: unknown }) : null;
  if (cause && typeof cause.code === 'string') {
    const said = socketErrors[cause.code];
    return said ? `${said} (${cause.code})` : cause.code;
  }
  if (cause && typeof cause.message === 'string') return cause.message;
  return err instanceof Error ? err.message : String(err);
}

/** The URL as shown in messages: never with a password in it. */
function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/+$/, '');
  } catch {
    return url;
  }
}
