import type { AnyEvent, FieldIssue, JobType } from '@tidemark/shared';
import type { DataSource, QueryRunner } from 'typeorm';
import type { JobRecord } from '../domain/job';
import { isActive } from '../domain/job';
import { decide, type ApplyContext, type RejectCode } from '../domain/state-machine';
import {
  diskColumns,
  diskValues,
  jobColumns,
  jobFromRows,
  jobValues,
  type DiskRow,
  type JobRow,
} from './job-rows';

export type Outcome =
  | { kind: 'applied'; note: string; job: JobRecord }
  | { kind: 'ignored'; why: string }
  /** Applied before (a redelivery or a republished event). */
  | { kind: 'duplicate' }
  | { kind: 'rejected'; code: RejectCode; reason: string; issues: FieldIssue[] }
  | { kind: 'deferred'; why: string };

/** Errors that will happen again however often the same write is tried. */
const deterministicErrnos = new Set([
  1048, // column cannot be null
  1062, // duplicate entry (e.g. a second active job for a VM)
  1264, // out of range
  1366, // incorrect value
  1406, // data too long
  1451, // row is referenced
  1452, // foreign key: referenced row missing
  3819, // MySQL CHECK constraint
  4025, // MariaDB CHECK constraint
]);

export function errnoOf(err: unknown): number | undefined {
  const e = err as { errno?: number; driverError?: { errno?: number } };
  return e?.driverError?.errno ?? e?.errno;
}

function sqlStateOf(err: unknown): string | undefined {
  const e = err as { sqlState?: string; driverError?: { sqlState?: string } };
  return e?.driverError?.sqlState ?? e?.sqlState;
}

/**
 * Whether the database refused the write for what it holds, so that trying it again can never
 * succeed: a known errno, or any error of SQLSTATE class 22 (data exception, e.g. 1292, a
 * datetime out of range) or 23 (integrity constraint). Such an event is dead-lettered with the
 * database's reason instead of being retried forever ahead of the events behind it.
 */
export function isDeterministic(err: unknown): boolean {
  const errno = errnoOf(err);
  if (errno !== undefined && deterministicErrnos.has(errno)) return true;
  const state = sqlStateOf(err);
  return state !== undefined && (state.startsWith('22') || state.startsWith('23'));
}

/** job id and disk key of a `diskValues` row. */
const diskKey = (row: unknown[]) => `${String(row[0])}\u0000${String(row[1])}`;
/** `processed_events.outcome` of a job created by request whose start has not been seen yet. */
export const CREATED = 'created';

const placeholders = (n: number) => Array(n).fill('?').join(', ');
const activeKey = (vmName: string, jobType: JobType) => `${jobType}\u0000${vmName}`;

/**
 * Applies events in one transaction: reads what they touch in a few queries, runs each through
 * the state machine in order, and writes the changed jobs, their disks and the processed event
 * ids together. Either all of it commits or none of it does.
 */
/**
 * How the applied events are recorded in `processed_events`: `event` for what came over the
 * bus; `request` for a job created by the hub's request, whose backup.start is still to come
 * (the reaper fails such a job when its start never arrives).
 */
export type Via = 'event' | 'request';

/** When the bus took each event (its stream timestamp), for events that came over it. */
export type HeardAt = ReadonlyMap<AnyEvent, Date>;

export async function applyEvents(
  ds: DataSource,
  events: AnyEvent[],
  via: Via = 'event',
  now = new Date(),
  heard: HeardAt = new Map(),
): Promise<Outcome[]> {
  const q = ds.createQueryRunner();
  await q.connect();
  try {
    await q.startTransaction('READ COMMITTED');
    const outcomes = await applyInTransaction(q, events, via, now, heard);
    await q.commitTransaction();
    return outcomes;
  } catch (err) {
    if (q.isTransactionActive) await q.rollbackTransaction().catch(() => undefined);
    throw err;
  } finally {
    await q.release();
  }
}

/**
 * Like `applyEvents`, but a batch that fails on one bad write is split: each event gets its own
 * transaction, and an event whose write can never succeed is rejected with the database's
 * reason. Transient failures (connection lost, deadlock) are thrown for the caller to retry.
 */
export async function applyEventsIsolating(
  ds: DataSource,
  events: AnyEvent[],
  via: Via = 'event',
  heard: HeardAt = new Map(),
): Promise<Outcome[]> {
  try {
    return await applyEventsOnce(ds, events, via, heard);
  } catch (err) {
    if (!isDeterministic(err) || events.length === 1) {
      if (events.length === 1 && isDeterministic(err)) return [dbReject(err)];
      throw err;
    }
  }
  const outcomes: Outcome[] = [];
  for (const event of events) {
    try {
      outcomes.push(...(await applyEventsOnce(ds, [event], via, heard)));
    } catch (err) {
      if (!isDeterministic(err)) throw err;
      outcomes.push(dbReject(err));
    }
  }
  return outcomes;
}

/**
 * A transaction that lost the race to record one of its events (another transaction, with no
 * job row to lock yet, committed the same event id first) is run again: it then finds the
 * event applied. Never a rejection: the event was applied, once.
 */
async function applyEventsOnce(
  ds: DataSource,
  events: AnyEvent[],
  via: Via,
  heard: HeardAt,
): Promise<Outcome[]> {
  try {
    return await applyEvents(ds, events, via, new Date(), heard);
  } catch (err) {
    if (!(errnoOf(err) === 1062 && /processed_events|for key 'PRIMARY'/.test(String(err))))
      throw err;
    return applyEvents(ds, events, via, new Date(), heard);
  }
}

function dbReject(err: unknown): Outcome {
  const errno = errnoOf(err);
  const message = (err as Error).message;
  const reason =
    errno === 1062 && /one_active/.test(message)
      ? 'the VM already has an active job of this type'
      : `the database refused the change: ${message}`;
  return {
    kind: 'rejected',
    code: errno === 1062 ? 'CONFLICT' : errno === 1452 ? 'NOT_FOUND' : 'INVALID',
    reason,
    issues: [{ path: '', message: reason }],
  };
}

async function applyInTransaction(
  q: QueryRunner,
  events: AnyEvent[],
  via: Via,
  now: Date,
  heard: HeardAt,
): Promise<Outcome[]> {
  const jobIds = [...new Set(events.map((e) => e.jobId))];
  const eventIds = [...new Set(events.map((e) => e.id))];

  // The job rows are locked first: a transaction applying the same event at the same time (the
  // stream's copy and a runner's request) waits here, then finds it among the processed.
  const jobRows: JobRow[] = await q.query(
    `SELECT * FROM backup_jobs WHERE id IN (${placeholders(jobIds.length)}) FOR UPDATE`,
    jobIds,
  );
  const seen: { event_id: string; outcome: string }[] = await q.query(
    `SELECT event_id, outcome FROM processed_events WHERE event_id IN (${placeholders(eventIds.length)})`,
    eventIds,
  );
  const processed = new Set(seen.map((r) => r.event_id));
  // Starts of jobs the hub created by request, now seen on the bus: no longer for the reaper.
  const awaitedStarts = new Set(seen.filter((r) => r.outcome === CREATED).map((r) => r.event_id));
  const arrivedStarts = new Set<string>();
  const diskRows: DiskRow[] = jobRows.length
    ? await q.query(
        `SELECT * FROM backup_disks WHERE job_id IN (${placeholders(jobRows.length)})`,
        jobRows.map((r) => r.id),
      )
    : [];
  const working = new Map<string, JobRecord>();
  // Disk rows as stored, to write back only the ones that change.
  const stored = new Map<string, string>();
  const disksByJob = new Map<string, DiskRow[]>();
  for (const d of diskRows) disksByJob.set(d.job_id, [...(disksByJob.get(d.job_id) ?? []), d]);
  for (const row of jobRows) {
    const job = jobFromRows(row, disksByJob.get(row.id) ?? []);
    working.set(row.id, job);
    for (const values of diskValues(job)) stored.set(diskKey(values), JSON.stringify(values));
  }

  // References named by events that may create a job.
  const repoIds = new Set<string>();
  const policyIds = new Set<string>();
  const parentIds = new Set<string>();
  const vmNames = new Set<string>();
  for (const e of events) {
    if (e.type === 'backup.progress') continue;
    const d = e.data as {
      repositoryId?: string;
      policyId?: string | null;
      parentJobId?: string | null;
      vmName?: string;
    };
    if (d.repositoryId) repoIds.add(d.repositoryId);
    if (d.policyId) policyIds.add(d.policyId);
    if (d.parentJobId) parentIds.add(d.parentJobId);
    if (d.vmName) vmNames.add(d.vmName);
  }
  const existing = async (table: string, ids: Set<string>) =>
    ids.size === 0
      ? new Set<string>()
      : new Set<string>(
          (
            await q.query(`SELECT id FROM ${table} WHERE id IN (${placeholders(ids.size)})`, [
              ...ids,
            ])
          ).map((r: { id: string }) => r.id),
        );
  const repos = await existing('backup_repositories', repoIds);
  const policies = await existing('backup_policies', policyIds);
  const parents = await existing('backup_jobs', parentIds);
  const active = new Map<string, string>();
  if (vmNames.size > 0) {
    const rows: { id: string; vm_name: string; job_type: JobType }[] = await q.query(
      `SELECT id, vm_name, job_type FROM backup_jobs WHERE active_vm_name IN (${placeholders(vmNames.size)})`,
      [...vmNames],
    );
    for (const r of rows) active.set(activeKey(r.vm_name, r.job_type), r.id);
  }

  const ctx: ApplyContext = {
    repositoryExists: (id) => repos.has(id),
    policyExists: (id) => policies.has(id),
    jobExists: (id) => working.has(id) || parents.has(id),
    activeJobOf: (vm, type) => active.get(activeKey(vm, type)) ?? null,
    heardAt: (event) => heard.get(event) ?? new Date(event.occurredAt),
  };

  const outcomes: Outcome[] = [];
  const dirty = new Set<string>();
  const processedRows: unknown[][] = [];
  for (const event of events) {
    if (processed.has(event.id)) {
      if (event.type === 'backup.start' && awaitedStarts.has(event.id)) arrivedStarts.add(event.id);
      outcomes.push({ kind: 'duplicate' });
      continue;
    }
    const decision = decide(working.get(event.jobId) ?? null, event, ctx);
    switch (decision.kind) {
      case 'apply': {
        const job = decision.job;
        const key = activeKey(job.vmName, job.jobType);
        if (isActive(job.status)) active.set(key, job.jobId);
        else if (active.get(key) === job.jobId) active.delete(key);
        working.set(job.jobId, job);
        dirty.add(job.jobId);
        outcomes.push({ kind: 'applied', note: decision.note, job });
        break;
      }
      case 'ignore':
        outcomes.push({ kind: 'ignored', why: decision.why });
        break;
      case 'reject':
        outcomes.push({
          kind: 'rejected',
          code: decision.code,
          reason: decision.reason,
          issues: decision.issues,
        });
        continue; // not marked processed: a later delivery is judged again
      case 'defer':
        outcomes.push({ kind: 'deferred', why: decision.why });
        continue;
      default: {
        const never: never = decision;
        throw new TypeError(`unhandled decision ${JSON.stringify(never)}`);
      }
    }
    processed.add(event.id);
    // Progress needs no id row: its per-job sequence already makes a redelivery a no-op, and
    // progress is most of the traffic.
    if (event.type === 'backup.progress') continue;
    processedRows.push([
      event.id,
      event.jobId,
      event.type,
      via === 'request' ? CREATED : outcomes[outcomes.length - 1].kind,
      now,
    ]);
  }

  if (dirty.size > 0) {
    const jobs = [...dirty].map((id) => working.get(id) as JobRecord);
    await numberCompletions(
      q,
      jobs.filter((j) => j.status === 'completed' && j.completionSeq === null),
    );
    await upsert(
      q,
      'backup_jobs',
      jobColumns,
      jobs.map((j) => jobValues(j, now)),
      ['id', 'created_at'],
    );
    // Only disk rows that differ from what was read (progress rarely changes them).
    const disks = jobs
      .flatMap((j) => diskValues(j))
      .filter((row) => stored.get(diskKey(row)) !== JSON.stringify(row));
    if (disks.length > 0)
      await upsert(q, 'backup_disks', diskColumns, disks, ['job_id', 'disk_key']);
  }
  if (arrivedStarts.size > 0) {
    await q.query(
      `UPDATE processed_events SET outcome = 'published' WHERE event_id IN (${placeholders(arrivedStarts.size)})`,
      [...arrivedStarts],
    );
  }
  if (processedRows.length > 0) {
    await q.query(
      `INSERT INTO processed_events (event_id, job_id, event_type, outcome, applied_at) VALUES ${processedRows
        .map(() => '(?, ?, ?, ?, ?)')
        .join(', ')}`,
      processedRows.flat(),
    );
  }
  return outcomes;
}

/**
 * Gives each newly completed job the next numbers of the ledger's completion order, from one
 * counter row (its row lock orders concurrent transactions; LAST_INSERT_ID(expr) hands the new
 * value back on this connection).
 */
async function numberCompletions(q: QueryRunner, completed: JobRecord[]): Promise<void> {
  if (completed.length === 0) return;
  await q.query(
    `UPDATE ledger_counters SET value = LAST_INSERT_ID(value + ?) WHERE name = 'completion'`,
    [completed.length],
  );
  const [{ top }]: { top: string | number }[] = await q.query('SELECT LAST_INSERT_ID() AS top');
  let seq = Number(top) - completed.length;
  for (const job of completed) job.completionSeq = ++seq;
}

async function upsert(
  q: QueryRunner,
  table: string,
  columns: readonly string[],
  rows: unknown[][],
  keep: string[],
): Promise<void> {
  const row = `(${placeholders(columns.length)})`;
  const updates = columns.filter((c) => !keep.includes(c)).map((c) => `${c} = VALUES(${c})`);
  await q.query(
    `INSERT INTO ${table} (${columns.join(', ')}) VALUES ${rows.map(() => row).join(', ')} ON DUPLICATE KEY UPDATE ${updates.join(', ')}`,
    rows.flat(),
  );
}
