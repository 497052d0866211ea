import { randomUUID } from 'node:crypto';
import {
  ConflictError,
  NotFoundError,
  ValidationError,
  knownFailure,
  makeEvent,
  type JobView,
  type PolicyView,
  type QueryInput,
  type QueryName,
  type QueryResults,
  type RepositoryView,
  type VmView,
} from '@tidemark/shared';
import type { DataSource } from 'typeorm';
import { applyEventsIsolating, errnoOf } from './persistence/event-store';
import { PolicyEntity, RepositoryEntity, VmDiskEntity, VmEntity } from './persistence/entities';
import { jobFromRows, jobView, type DiskRow, type JobRow } from './persistence/job-rows';

export type LedgerQueries = {
  [Q in QueryName]: (request: QueryInput<Q>) => Promise<QueryResults[Q]>;
};

/** The ledger's answers to the hub; jobs are created through the same state machine as events. */
export function createQueries(ds: DataSource): LedgerQueries {
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

    async 'jobs.list'({ vmName, jobType, status, limit }) {
      const filters: [string, unknown][] = [];
      if (vmName) filters.push(['vm_name = ?', vmName]);
      if (jobType) filters.push(['job_type = ?', jobType]);
      if (status) filters.push(['status = ?', status]);
      const where = filters.length ? filters.map(([sql]) => sql).join(' AND ') : 'TRUE';
      return findJobs(
        where,
        filters.map(([, v]) => v),
        'created_at DESC, id',
        limit,
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

    async 'repositories.list'() {
      return (await repos.find({ order: { createdAt: 'ASC' } })).map(repoView);
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

    async 'policies.list'() {
      return (await policies.find({ order: { createdAt: 'ASC' } })).map(policyView);
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

    async 'vms.list'() {
      return (await vms.find({ relations: { disks: true }, order: { vmName: 'ASC' } })).map(vmView);
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
