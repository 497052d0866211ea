import { randomUUID } from 'node:crypto';
import {
  ConflictError,
  NotFoundError,
  ValidationError,
  knownFailure,
  makeEvent,
  type JobView,
  type Page,
  type PolicyView,
  type QueryInput,
  type QueryName,
  type QueryResults,
  type RepositoryView,
  type VmView,
} from '@tidemark/shared';
import type { DataSource } from 'typeorm';
import { decodeCursor, encodeCursor, fitPage } from './paging';
import { applyEventsIsolating, errnoOf } from './persistence/event-store';
import { PolicyEntity, RepositoryEntity, VmDiskEntity, VmEntity } from './persistence/entities';
import { jobFromRows, jobView, type DiskRow, type JobRow } from './persistence/job-rows';

export type LedgerQueries = {
  [Q in QueryName]: (request: QueryInput<Q>) => Promise<QueryResults[Q]>;
};

export interface QueryOptions {
  /** The largest reply the bus carries now (its max_payload): list pages stop short of it. */
  maxReplyBytes?: () => number;
}

interface RegistryRow {
  id: string;
  name: string;
  created_at: Date;
}

/** The ledger's answers to the hub; jobs are created through the same state machine as events. */
export function createQueries(ds: DataSource, options: QueryOptions = {}): LedgerQueries {
  const maxReplyBytes = options.maxReplyBytes ?? (() => Number.POSITIVE_INFINITY);
  const repos = ds.getRepository(RepositoryEntity);
  const policies = ds.getRepository(PolicyEntity);
  const vms = ds.getRepository(VmEntity);

  /** Jobs matching a filter, newest first, with their disks. */
  async function findJobs(
    where: string,
    params: unknown[],
    order: string,
    limit: number,
  ): Promise<JobView[]> {
    const rows: JobRow[] = await ds.query(
      `SELECT * FROM backup_jobs WHERE ${where} ORDER BY ${order} LIMIT ${Number(limit)}`,
      params,
    );
    if (rows.length === 0) return [];
    const disks: DiskRow[] = await ds.query(
      `SELECT * FROM backup_disks WHERE job_id IN (${rows.map(() => '?').join(', ')})`,
      rows.map((r) => r.id),
    );
    return rows.map((r) =>
      jobView(
        jobFromRows(
          r,
          disks.filter((d) => d.job_id === r.id),
        ),
      ),
    );
  }

  async function loadJob(jobId: string): Promise<JobView | null> {
    return (await findJobs('id = ?', [jobId], 'id', 1))[0] ?? null;
  }

  /**
   * A page of a registry table, oldest first (ties by id), after the cursor's row: keyset
   * paging, so rows added meanwhile land on later pages and none is seen twice.
   */
  async function registryPage<R extends RegistryRow, V extends { id: string; createdAt: string }>(
    list: 'repositories' | 'policies',
    table: string,
    view: (row: R) => V,
    limit: number,
    cursor: string | undefined,
  ): Promise<Page<V>> {
    let where = 'TRUE';
    const params: unknown[] = [];
    if (cursor) {
      const [at, id] = decodeCursor(list, cursor);
      where = 'created_at >= ? AND (created_at > ? OR id > ?)';
      params.push(new Date(at), new Date(at), id);
    }
    const rows: R[] = await ds.query(
      `SELECT * FROM ${table} WHERE ${where} ORDER BY created_at, id LIMIT ${Number(limit) + 1}`,
      params,
    );
    return fitPage(
      rows.map(view),
      limit,
      maxReplyBytes(),
      (v) => encodeCursor(list, [v.createdAt, v.id]),
      (v) => `${list === 'policies' ? 'policy' : 'repository'} ${v.id}`,
    );
  }

  const repoView = (r: RepositoryEntity): RepositoryView => ({
    id: r.id,
    name: r.name,
    path: r.path,
    createdAt: r.createdAt.toISOString(),
  });
  const policyView = (p: PolicyEntity): PolicyView => ({
    id: p.id,
    name: p.name,
    schedule: p.schedule,
    retentionCount: p.retentionCount,
    createdAt: p.createdAt.toISOString(),
  });
  const vmView = (v: VmEntity): VmView => ({
    vmName: v.vmName,
    disks: [...(v.disks ?? [])]
      .sort((a, b) => a.position - b.position)
      .map((d) => ({ diskKey: d.diskKey, driver: d.driver, path: d.path })),
    createdAt: v.createdAt.toISOString(),
  });

  return {
    async 'jobs.create'(req) {
      const { jobId, jobType, ...data } = req;
      // The hub's backup.start for this job carries the job id as its event id, so the event
      // that follows this request finds itself already applied.
      const event = makeEvent('backup.start', { id: jobId, jobId, jobType, data });
      const [outcome] = await applyEventsIsolating(ds, [event], 'request');
      switch (outcome.kind) {
        case 'applied':
          return jobView(outcome.job);
        case 'ignored':
        case 'duplicate': {
          const existing = await loadJob(jobId);
          if (!existing) throw new ConflictError(`job ${jobId} could not be created`);
          return existing;
        }
        case 'rejected':
          if (outcome.code === 'NOT_FOUND') throw new NotFoundError(outcome.reason, outcome.issues);
          if (outcome.code === 'CONFLICT') throw new ConflictError(outcome.reason, outcome.issues);
          throw new ValidationError(outcome.reason, outcome.issues);
        case 'deferred':
          throw new ConflictError(outcome.why);
        default: {
          const never: never = outcome;
          throw new TypeError(`unhandled outcome ${JSON.stringify(never)}`);
        }
      }
    },

    async 'jobs.fail'({ jobId, code, message, retryable }) {
      const job = await loadJob(jobId);
      if (!job)
        throw new NotFoundError(`job ${jobId} does not exist`, [
          { path: 'jobId', message: 'not found' },
        ]);
      const event = makeEvent('backup.failed', {
        jobId,
        jobType: job.jobType,
        // The request keeps v1's open code (an older hub may send any): read as v1 is.
        data: { ...knownFailure(code, message), retryable },
      });
      const [outcome] = await applyEventsIsolating(ds, [event]);
      if (outcome.kind === 'rejected') throw new ConflictError(outcome.reason, outcome.issues);
      // Applied, or ignored because the job had already ended: either way, report what is recorded.
      return (await loadJob(jobId)) as JobView;
    },

    async 'jobs.complete'({ jobId, eventId, data }) {
      const job = await loadJob(jobId);
      if (!job)
        throw new NotFoundError(`job ${jobId} does not exist`, [
          { path: 'jobId', message: 'not found' },
        ]);
      const event = makeEvent('backup.completed', {
        id: eventId,
        jobId,
        jobType: job.jobType,
        data,
      });
      const [outcome] = await applyEventsIsolating(ds, [event]);
      if (outcome.kind === 'rejected') {
        if (outcome.code === 'NOT_FOUND') throw new NotFoundError(outcome.reason, outcome.issues);
        if (outcome.code === 'CONFLICT') throw new ConflictError(outcome.reason, outcome.issues);
        throw new ValidationError(outcome.reason, outcome.issues);
      }
      // Applied, or a repeat of the same completion: either way, report what is recorded.
      return (await loadJob(jobId)) as JobView;
    },

    async 'jobs.get'({ jobId }) {
      const job = await loadJob(jobId);
      if (!job)
        throw new NotFoundError(`job ${jobId} does not exist`, [
          { path: 'jobId', message: 'not found' },
        ]);
      return job;
    },

    /** Newest first (ties by id, descending too: one index scan); keyset paging after the cursor's job. */
    async 'jobs.list'({ vmName, jobType, status, limit, cursor }) {
      const filters: [string, unknown[]][] = [];
      if (vmName) filters.push(['vm_name = ?', [vmName]]);
      if (jobType) filters.push(['job_type = ?', [jobType]]);
      if (status) filters.push(['status = ?', [status]]);
      if (cursor) {
        const [at, id] = decodeCursor('jobs', cursor);
        // A range on created_at the index serves, then the ties after the cursor's id.
        filters.push([
          'created_at <= ? AND (created_at < ? OR id < ?)',
          [new Date(at), new Date(at), id],
        ]);
      }
      const where = filters.length ? filters.map(([sql]) => sql).join(' AND ') : 'TRUE';
      const jobs = await findJobs(
        where,
        filters.flatMap(([, v]) => v),
        'created_at DESC, id DESC',
        limit + 1,
      );
      return fitPage(
        jobs,
        limit,
        maxReplyBytes(),
        (j) => encodeCursor('jobs', [j.createdAt, j.jobId]),
        (j) => `job ${j.jobId}`,
      );
    },

    /**
     * The chain head: the completed job of the chain the ledger recorded last (its own
     * completion order, never a runner's clock): where the chain's next incremental starts.
     */
    async 'chain-head'({ vmName, jobType, repositoryId }) {
      const [head] = await findJobs(
        `vm_name = ? AND job_type = ? AND status = 'completed'${repositoryId ? ' AND repository_id = ?' : ''}`,
        repositoryId ? [vmName, jobType, repositoryId] : [vmName, jobType],
        'completion_seq DESC',
        1,
      );
      return head ?? null;
    },

    async 'chain-heads'({ vmName }) {
      return findJobs(
        `completion_seq IN (SELECT MAX(completion_seq) FROM backup_jobs
          WHERE vm_name = ? AND status = 'completed' GROUP BY job_type, repository_id)`,
        [vmName],
        'completion_seq DESC',
        64,
      );
    },

    async 'repositories.create'({ name, path }) {
      const row = repos.create({ id: `repo-${randomUUID()}`, name, path, createdAt: new Date() });
      await insertOrConflict(() => repos.insert(row), `repository ${name} already exists`, 'name');
      return repoView(row);
    },

    async 'repositories.get'({ id }) {
      const repo = await repos.findOneBy({ id });
      if (!repo)
        throw new NotFoundError(`repository ${id} does not exist`, [
          { path: 'id', message: 'not found' },
        ]);
      return repoView(repo);
    },

    async 'repositories.list'({ limit, cursor }) {
      return registryPage(
        'repositories',
        'backup_repositories',
        (r: RegistryRow & { path: string }) => ({
          id: r.id,
          name: r.name,
          path: r.path,
          createdAt: r.created_at.toISOString(),
        }),
        limit,
        cursor,
      );
    },

    async 'policies.create'(req) {
      const row = policies.create({ id: `policy-${randomUUID()}`, ...req, createdAt: new Date() });
      await insertOrConflict(
        () => policies.insert(row),
        `policy ${req.name} already exists`,
        'name',
      );
      return policyView(row);
    },

    async 'policies.list'({ limit, cursor }) {
      return registryPage(
        'policies',
        'backup_policies',
        (p: RegistryRow & { schedule: string | null; retention_count: number | null }) => ({
          id: p.id,
          name: p.name,
          schedule: p.schedule,
          retentionCount: p.retention_count,
          createdAt: p.created_at.toISOString(),
        }),
        limit,
        cursor,
      );
    },

    async 'vms.create'({ vmName, disks }) {
      const createdAt = new Date();
      await insertOrConflict(
        () =>
          ds.transaction(async (m) => {
            await m.insert(VmEntity, { vmName, createdAt });
            await m.insert(
              VmDiskEntity,
              disks.map((d, position) => ({ vmName, position, ...d })),
            );
          }),
        `VM ${vmName} is already registered`,
        'vmName',
      );
      return { vmName, disks, createdAt: createdAt.toISOString() };
    },

    async 'vms.update'({ vmName, disks }) {
      const found = await ds.transaction(async (m) => {
        // Locks the VM's row: two updates of one VM apply one after the other.
        const [vm] = (await m.query(
          'SELECT vm_name FROM vm_contexts WHERE vm_name = ? FOR UPDATE',
          [vmName],
        )) as unknown[];
        if (!vm) return false;
        await m.delete(VmDiskEntity, { vmName });
        await m.insert(
          VmDiskEntity,
          disks.map((d, position) => ({ vmName, position, ...d })),
        );
        return true;
      });
      if (!found)
        throw new NotFoundError(`VM ${vmName} is not registered`, [
          { path: 'vmName', message: 'not found' },
        ]);
      const vm = await vms.findOne({ where: { vmName }, relations: { disks: true } });
      return vmView(vm as VmEntity);
    },

    async 'vms.get'({ vmName }) {
      const vm = await vms.findOne({ where: { vmName }, relations: { disks: true } });
      if (!vm)
        throw new NotFoundError(`VM ${vmName} is not registered`, [
          { path: 'vmName', message: 'not found' },
        ]);
      return vmView(vm);
    },

    /** By name; keyset paging after the cursor's VM. */
    async 'vms.list'({ limit, cursor }) {
      const after = cursor ? decodeCursor('vms', cursor)[0] : null;
      const rows: { vm_name: string; created_at: Date }[] = await ds.query(
        `SELECT vm_name, created_at FROM vm_contexts ${after === null ? '' : 'WHERE vm_name > ?'}
         ORDER BY vm_name LIMIT ${Number(limit) + 1}`,
        after === null ? [] : [after],
      );
      const disks: { vm_name: string; disk_key: string; driver: string; path: string }[] =
        rows.length === 0
          ? []
          : await ds.query(
              `SELECT vm_name, disk_key, driver, path FROM vm_disks
               WHERE vm_name IN (${rows.map(() => '?').join(', ')}) ORDER BY vm_name, position`,
              rows.map((r) => r.vm_name),
            );
      const views = rows.map((r): VmView => ({
        vmName: r.vm_name,
        disks: disks
          .filter((d) => d.vm_name === r.vm_name)
          .map((d) => ({ diskKey: d.disk_key, driver: d.driver, path: d.path })),
        createdAt: r.created_at.toISOString(),
      }));
      return fitPage(
        views,
        limit,
        maxReplyBytes(),
        (v) => encodeCursor('vms', [v.vmName]),
        (v) => `VM ${v.vmName}`,
      );
    },
  };
}

async function insertOrConflict(
  insert: () => Promise<unknown>,
  message: string,
  path: string,
): Promise<void> {
  try {
    await insert();
  } catch (err) {
    if (errnoOf(err) === 1062)
      throw new ConflictError(message, [{ path, message: 'already exists' }]);
    throw err;
  }
}
