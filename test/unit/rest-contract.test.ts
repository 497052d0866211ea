/**
 * The CLI's client against the hub's real app (in-process, through `inject`) over a fake ledger:
 * every answer the hub gives, serialized with the shared contract's schemas, comes out of the
 * CLI's client unchanged, parsed with those same schemas; a real answer missing a field is
 * refused naming it.
 */
import type { PubAck } from '@nats-io/jetstream';
import { createHubApi, type HubApi } from '@tidemark/cli/api';
import { buildApp } from '@tidemark/hub/http/app';
import type { Bus } from '@tidemark/hub/nats/bus';
import { createLogger, type JobType, type JobView, type QueryName } from '@tidemark/shared';

const createdAt = '2026-01-01T00:00:00.000Z';
const vm = {
  vmName: 'pg01',
  disks: [{ diskKey: 'disk-0', driver: 'qemu', path: '/vms/pg01.qcow2' }],
  createdAt,
};
const repository = { id: 'repo-1', name: 'main', path: '/srv/tidemark', createdAt };
const policy = {
  id: 'policy-1',
  name: 'nightly',
  schedule: '0 2 * * *',
  retentionCount: 7,
  createdAt,
};

function job(jobId: string, jobType: JobType): JobView {
  return {
    jobId,
    jobType,
    vmName: 'pg01',
    backupType: 'full',
    repositoryId: 'repo-1',
    policyId: null,
    parentJobId: null,
    status: 'running',
    changeId: null,
    bytesTransferred: null,
    errorCode: null,
    errorMessage: null,
    retryable: null,
    progress: {
      phase: 'copying',
      sequence: 3,
      bytesDone: 1024,
      bytesTotal: 4096,
      bytesPerSecond: 512,
    },
    createdAt,
    startedAt: createdAt,
    completedAt: null,
    disks: [
      {
        diskKey: 'disk-0',
        source: '/vms/pg01.qcow2',
        changeId: null,
        previousChangeId: null,
        bytesTransferred: null,
        bytesTotal: 4096,
        fullReason: null,
        canary: null,
        changeTracking: null,
        targetPath: `/srv/tidemark/pg01/${jobId}/disk-0.qcow2`,
        backingPath: null,
      },
    ],
  };
}

const jobTypeOf = (jobId: string): JobType =>
  jobId.startsWith('replication') ? 'replication' : 'backup';

/** The ledger's answers, per query; the hub asks nothing else on these routes. */
const ledger: Partial<
  Record<QueryName, (request: { jobId: string; jobType: JobType }) => unknown>
> = {
  'vms.create': () => vm,
  'vms.list': () => [vm],
  'vms.get': () => vm,
  'repositories.create': () => repository,
  'repositories.list': () => [repository],
  'repositories.get': () => repository,
  'policies.create': () => policy,
  'policies.list': () => [policy],
  'chain-head': () => null,
  'chain-heads': () => [],
  'jobs.create': ({ jobId, jobType }) => ({ ...job(jobId, jobType), status: 'queued' }),
  'jobs.get': ({ jobId }) => job(jobId, jobTypeOf(jobId)),
  'jobs.list': () => [job('backup-1', 'backup')],
};

const bus: Bus = {
  ask: async (name, request) => {
    const answer = ledger[name];
    if (!answer) throw new Error(`the fake ledger has no answer to ${name}`);
    return answer(request as never) as never;
  },
  publish: async () => ({ stream: 'BACKUP', seq: 1, duplicate: false, domain: '' }) as PubAck,
};

describe("the CLI's client against the hub's app", () => {
  let app: Awaited<ReturnType<typeof buildApp>>;
  /** The body of the hub's last answer, as it sent it. */
  let lastBody: unknown;
  /** Applied to each body the hub sent before the client reads it. */
  let alter: (body: Record<string, unknown>) => void = () => {};
  let cli: HubApi;

  beforeAll(async () => {
    app = await buildApp({ bus, log: createLogger('hub', 'silent'), token: undefined });
    cli = createHubApi({
      url: 'http://hub',
      fetch: async (url, init) => {
        const res = await app.inject({
          method: init.method as 'GET' | 'POST',
          url: url.slice('http://hub'.length),
          headers: init.headers as Record<string, string>,
          payload: init.body as string | undefined,
        });
        lastBody = res.json();
        const body = res.json<Record<string, unknown>>();
        alter(body);
        return new Response(JSON.stringify(body), {
          status: res.statusCode,
          headers: { 'content-type': 'application/json' },
        });
      },
    });
  });
  afterAll(() => app.close());
  afterEach(() => (alter = () => {}));

  const start = { vm_name: 'pg01', repository_id: 'repo-1', backup_type: 'auto' } as const;
  // One entry per method of the client: a method added there fails to compile here until tested.
  const calls: { [M in keyof HubApi]: (() => Promise<unknown>)[] } = {
    createVm: [
      () =>
        cli.createVm({
          vm_name: 'pg01',
          disks: [{ disk_key: 'disk-0', driver: 'qemu', path: '/vms/pg01.qcow2' }],
        }),
    ],
    listVms: [() => cli.listVms()],
    createRepository: [() => cli.createRepository({ name: 'main', path: '/srv/tidemark' })],
    listRepositories: [() => cli.listRepositories()],
    createPolicy: [
      () => cli.createPolicy({ name: 'nightly', schedule: '0 2 * * *', retention_count: 7 }),
    ],
    listPolicies: [() => cli.listPolicies()],
    startBackup: [() => cli.startBackup(start)],
    startReplication: [() => cli.startReplication(start)],
    getBackup: [() => cli.getBackup('backup-1')],
    getReplication: [() => cli.getReplication('replication-1')],
    listBackups: [() => cli.listBackups({ vm_name: 'pg01', status: 'running', limit: 5 })],
    cancelJob: [
      () => cli.cancelJob('backup', 'backup-1', 'wrong VM'),
      () => cli.cancelJob('replication', 'replication-1'),
    ],
  };
  const cases = Object.entries(calls).flatMap(([method, fns]) =>
    fns.map((fn, i) => [fns.length > 1 ? `${method} (${i + 1})` : method, fn] as const),
  );

  it.each(cases)('%s: hands on what the hub answered, as it answered it', async (_name, call) => {
    const answer = await call();
    // As `--json` prints it: the same fields in the same order.
    expect(JSON.stringify(answer, null, 2)).toBe(JSON.stringify(lastBody, null, 2));
  });

  it('refuses a real answer of the hub once a field of it is gone, naming the field', async () => {
    alter = (body) => delete body.status;
    await expect(cli.getBackup('backup-1')).rejects.toMatchObject({
      status: 200,
      details: [{ path: 'response.status', message: expect.stringMatching(/expected one of/) }],
    });
  });
});
