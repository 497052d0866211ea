// A small typed client of the hub's REST API v1: one function per route of the shared contract
// (`api.routes` of @tidemark/shared), its types taken from the contract's schemas, each answer
// checked against its route's schema before it is handed on. Nothing here prints; errors are
// ApiError (the hub answered with an error, or with a body the contract does not allow) or
// HubUnreachableError (it did not answer).
import { api, JobStatus, toFieldIssues, type JobType } from '@tidemark/shared';
import type { z } from 'zod';

const { routes } = api;

/** What a route takes as its body, and what it answers on success. */
type Body<R extends api.Route> = R extends { body: z.ZodType } ? z.input<R['body']> : never;
type Answer<R extends api.Route> = z.output<api.SuccessSchema<R>>;

export type VmDisk = Body<typeof routes.createVm>['disks'][number];
export type Vm = Answer<typeof routes.createVm>;
export type Repository = Answer<typeof routes.createRepository>;
export type Policy = Answer<typeof routes.createPolicy>;
export type NewPolicy = Body<typeof routes.createPolicy>;
/** Body of `POST /api/v1/backups` and `POST /api/v1/replications`. */
export type StartJobRequest = Body<typeof routes.startBackup>;
export type AcceptedBackup = Answer<typeof routes.startBackup>;
export type AcceptedReplication = Answer<typeof routes.startReplication>;
export type BackupJob = Answer<typeof routes.getBackup>;
export type ReplicationJob = Answer<typeof routes.getReplication>;
export type Job = BackupJob | ReplicationJob;
export type JobDisk = Job['disks'][number];
export type JobProgress = NonNullable<Job['progress']>;
/** The query of `GET /api/v1/backups`, each part optional as the hub reads it. */
export type BackupFilter = Partial<z.output<typeof api.ListBackupsQuery>>;
/** The 202 answer to a cancel: the job shows `cancelled` once the ledger applied the event. */
export type CancelAccepted = Answer<typeof routes.cancelBackup>;

/** The id of a job or accepted job, whichever key its route uses. */
export function jobIdOf(job: { backup_id: string } | { job_id: string }): string {
  return 'backup_id' in job ? job.backup_id : job.job_id;
}

export function isFinished(status: JobStatus): boolean {
  return (
    status === JobStatus.Completed || status === JobStatus.Failed || status === JobStatus.Cancelled
  );
}

/** One entry of an error answer's `details`: the field path (e.g. `body.vm_name`) and why. */
export type ApiErrorDetail = z.output<typeof api.ErrorBody>['details'][number];

/**
 * The hub answered with an error status (`message` is its `error` sentence), or with a body its
 * route's schema does not allow (`details` name the fields, under `response`).
 */
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
  createVm(vm: Body<typeof routes.createVm>): Promise<Vm>;
  listVms(): Promise<Answer<typeof routes.listVms>>;
  createRepository(repo: Body<typeof routes.createRepository>): Promise<Repository>;
  listRepositories(): Promise<Answer<typeof routes.listRepositories>>;
  createPolicy(policy: NewPolicy): Promise<Policy>;
  listPolicies(): Promise<Answer<typeof routes.listPolicies>>;
  startBackup(request: StartJobRequest): Promise<AcceptedBackup>;
  /** Either job type (job_type says which). */
  getBackup(backupId: string): Promise<BackupJob>;
  listBackups(filter?: BackupFilter): Promise<Answer<typeof routes.listBackups>>;
  startReplication(request: StartJobRequest): Promise<AcceptedReplication>;
  getReplication(jobId: string): Promise<ReplicationJob>;
  /** Asks for a queued or running job to stop (409 once it has ended). */
  cancelJob(jobType: JobType, jobId: string, reason?: string): Promise<CancelAccepted>;
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

  /** Calls `route` and returns its answer, checked against the route's success schema. */
  async function call<R extends api.Route>(route: R, parts: CallParts<R> = {}): Promise<Answer<R>> {
    const { method } = route;
    const path = `${pathOf(route, parts.params)}${query(parts.query ?? {})}`;
    const { body } = parts;
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
    const schema: z.ZodType = Object.values(route.response)[0];
    const answer = schema.safeParse(parsed);
    // The route's own schema parsed it; TypeScript cannot follow that through Object.values.
    if (answer.success) return answer.data as Answer<R>;
    throw new ApiError(
      res.status,
      `the hub at ${shownUrl} answered ${method} ${path} with a body its contract does not allow`,
      toFieldIssues(answer.error, 'response'),
    );
  }

  return {
    createVm: (vm) => call(routes.createVm, { body: vm }),
    listVms: () => call(routes.listVms),
    createRepository: (repo) => call(routes.createRepository, { body: repo }),
    listRepositories: () => call(routes.listRepositories),
    createPolicy: (policy) => call(routes.createPolicy, { body: policy }),
    listPolicies: () => call(routes.listPolicies),
    startBackup: (req) => call(routes.startBackup, { body: req }),
    getBackup: (backupId) => call(routes.getBackup, { params: { backup_id: backupId } }),
    listBackups: (filter = {}) => call(routes.listBackups, { query: filter }),
    startReplication: (req) => call(routes.startReplication, { body: req }),
    getReplication: (jobId) => call(routes.getReplication, { params: { job_id: jobId } }),
    cancelJob: (jobType, jobId, reason) => {
      const body = reason === undefined ? {} : { reason };
      return jobType === 'backup'
        ? call(routes.cancelBackup, { params: { backup_id: jobId }, body })
        : call(routes.cancelReplication, { params: { job_id: jobId }, body });
    },
  };
}

/** The parts of a call its route takes. */
interface CallParts<R extends api.Route> {
  params?: R extends { params: z.ZodType } ? z.input<R['params']> : never;
  query?: R extends { querystring: z.ZodType } ? Partial<z.output<R['querystring']>> : never;
  body?: Body<R>;
}

/** The route's path with each `:name` replaced by that parameter, escaped. */
function pathOf(route: api.Route, params: unknown = {}): string {
  const values = params as Record<string, string>;
  return route.path.replace(/:(\w+)/g, (_, name: string) => encodeURIComponent(values[name]));
}

function query(filter: object): string {
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

// The contract's error body, but a body without usable `details` still yields its `error`: an
// error from a proxy in front of the hub reads as well as it can.
const ErrorAnswer = api.ErrorBody.extend({ details: api.ErrorBody.shape.details.catch([]) });

function errorFromAnswer(res: Response, body: unknown): ApiError {
  const answer = ErrorAnswer.safeParse(body);
  const said = answer.success ? answer.data : { error: '', details: [] };
  const message = said.error || `the hub answered ${res.status} ${res.statusText}`.trim();
  const retryAfter = Number(res.headers.get('retry-after'));
  return new ApiError(
    res.status,
    message,
    said.details,
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
