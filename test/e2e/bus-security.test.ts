/**
 * The bus with the project's own NATS configuration (infra/nats/secure.conf): one user per
 * service, each allowed only its subjects. The whole system still works under it (backup,
 * cancel, an old client's completion), and a service cannot do what is not its job: the runner
 * cannot start jobs, the hub cannot report completions or failures, nobody but the ledger can
 * answer its queries.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { busTopology, makeEvent, publishEvent } from '@tidemark/shared';
import { MiB, createImage, tempDir, writeDisk } from '../support/disks';
import { freePort, testServers, uniqueName, waitFor, withDatabase } from '../support/env';
import { completedData, startData } from '../support/ledger-harness';
import { startSystem, startedJobId, type RunningSystem } from '../support/system';

jest.setTimeout(120_000);

const config = resolve(__dirname, '../../infra/nats/secure.conf');
const tmp = tempDir('tidemark-bus-');
const passwords = Object.fromEntries(
  // nats-server parses a variable's value as a config value: begin with a letter, or "6e1…" is a number.
  ['ledger', 'hub', 'runner', 'admin'].map((u) => [u, `p${randomBytes(12).toString('hex')}`]),
) as Record<'ledger' | 'hub' | 'runner' | 'admin', string>;
const topo = busTopology('');
let server: ChildProcess;
let url: string;
let system: RunningSystem;
let admin: NatsConnection;
let serverLog = '';
const apiToken = `tok${randomBytes(16).toString('hex')}`;

const as = (user: keyof typeof passwords) =>
  connect({ servers: url, user, pass: passwords[user], maxReconnectAttempts: 0 });

beforeAll(async () => {
  const port = await freePort();
  url = `nats://127.0.0.1:${port}`;
  server = spawn(
    'nats-server',
    ['-c', config, '-a', '127.0.0.1', '-p', String(port), '-m', '0', '-sd', join(tmp.dir, 'js')],
    {
      env: {
        PATH: process.env.PATH,
        TIDEMARK_NATS_LEDGER_PASSWORD: passwords.ledger,
        TIDEMARK_NATS_HUB_PASSWORD: passwords.hub,
        TIDEMARK_NATS_RUNNER_PASSWORD: passwords.runner,
        TIDEMARK_NATS_ADMIN_PASSWORD: passwords.admin,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  server.stderr?.on('data', (b: Buffer) => (serverLog += b.toString('utf8')));
  admin = await waitFor('nats-server with secure.conf', () => as('admin'), 10_000, 100).catch(
    (err: unknown) => {
      throw new Error(`${String(err)}\nnats-server said:\n${serverLog}`);
    },
  );

  const { mysqlUrl } = testServers();
  const user = (name: string, password: string) => ({
    TIDEMARK_NATS_USER: name,
    TIDEMARK_NATS_PASSWORD: password,
  });
  system = await startSystem({
    natsUrl: url,
    mysqlUrl: withDatabase(mysqlUrl, uniqueName('tidemark_bus_')),
    busPrefix: '',
    dir: join(tmp.dir, 'services'),
    roots: {
      repository: [join(tmp.dir, 'repository'), join(tmp.dir, 'repository-2')],
      source: [tmp.dir],
    },
    apiToken,
    serviceEnv: {
      ledger: user('ledger', passwords.ledger),
      hub: user('hub', passwords.hub),
      'appliance-runner': user('runner', passwords.runner),
    },
  });
});

afterAll(async () => {
  await system?.stop();
  await admin?.close();
  server?.kill();
  tmp.remove();
});

/** The job ids of every event in the stream. */
async function jobIdsInStream(): Promise<string[]> {
  const jsm = await jetstreamManager(admin);
  const { state } = await jsm.streams.info(topo.stream);
  const ids: string[] = [];
  for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(topo.stream, { seq }).catch(() => null);
    if (m) ids.push(m.json<{ jobId: string }>().jobId);
  }
  return ids;
}

describe('the bus with one user per service (infra/nats/secure.conf)', () => {
  it('runs a backup, a cancel and an old client’s completion with each service as its own user', async () => {
    const image = join(tmp.dir, 'pg.qcow2');
    createImage(image, 8 * MiB);
    writeDisk(image, [{ offset: 0, length: 2 * MiB, pattern: 0x33 }]);
    const repo = await system.api<{ id: string }>('POST', '/api/v1/repositories', {
      name: 'secure',
      path: join(tmp.dir, 'repository'),
    });
    expect((await system.cli(['vm', 'add', 'pg', '--disk', `disk-0=${image}`])).code).toBe(0);
    const run = await system.cli(['backup', 'start', 'pg', '--repo', repo.body.id, '--follow']);
    expect({ code: run.code, stderr: run.code === 0 ? '' : run.stderr }).toEqual({
      code: 0,
      stderr: '',
    });
    const jobId = startedJobId(run.stdout);
    const job = await system.api<{ status: string; disks: Array<{ change_id: string }> }>(
      'GET',
      `/api/v1/backups/${jobId}`,
    );
    expect(job.body.status).toBe('completed');
    expect(job.body.disks[0]?.change_id).toMatch(/\/1$/);

    // Cancel (the hub publishes backup.cancel), then an old client's completion (the hub asks
    // the ledger to record it; it never publishes completions itself).
    expect((await system.cli(['vm', 'add', 'old', '--disk', `disk-0=${image}-old`])).code).toBe(0);
    const queued = await system.api<{ status: number; job_id: string }>(
      'POST',
      '/api/v1/replications',
      { vm_name: 'old', repository_id: repo.body.id, backup_type: 'full' },
    );
    const replicationId = queued.body.job_id;
    const done = await system.api('POST', `/api/v1/replications/${replicationId}/changeid`, {
      change_id: 'uuid-old/7',
    });
    expect(done.status).toBe(202);
    await waitFor('completion recorded', async () => {
      const r = await system.api<{ status: string }>(
        'GET',
        `/api/v1/replications/${replicationId}`,
      );
      return r.body.status === 'completed';
    });
    const again = await system.api<{ job_id: string }>('POST', '/api/v1/replications', {
      vm_name: 'old',
      repository_id: repo.body.id,
      backup_type: 'full',
    });
    const cancelled = await system.api('POST', `/api/v1/replications/${again.body.job_id}/cancel`);
    expect(cancelled.status).toBe(202);
    await waitFor('cancel recorded', async () => {
      const r = await system.api<{ status: string }>(
        'GET',
        `/api/v1/replications/${again.body.job_id}`,
      );
      return r.body.status === 'cancelled' || r.body.status === 'completed';
    });
    expect(serverLog).not.toMatch(/Violation/);
  });

  it('refuses, under this configuration too, a job whose target would leave its repository', async () => {
    const repoDir = join(tmp.dir, 'repository-2');
    const outside = join(tmp.dir, 'outside');
    mkdirSync(repoDir);
    mkdirSync(outside);
    symlinkSync(outside, join(repoDir, 'evil')); // the VM's directory leads elsewhere
    const repo = await system.api<{ id: string }>('POST', '/api/v1/repositories', {
      name: 'escape',
      path: repoDir,
    });
    const image = join(tmp.dir, 'evil.qcow2');
    createImage(image, 4 * MiB);
    expect((await system.cli(['vm', 'add', 'evil', '--disk', `disk-0=${image}`])).code).toBe(0);
    const run = await system.cli(['backup', 'start', 'evil', '--repo', repo.body.id, '--follow']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('PATH_OUTSIDE_REPOSITORY');
    expect(readdirSync(outside)).toEqual([]);
  });

  it('refuses a backup.start from the runner and a backup.completed or backup.failed from the hub', async () => {
    const jobId = uniqueName('job-forbidden-');
    const forbidden = (type: 'backup.start' | 'backup.completed' | 'backup.failed') => {
      const jobType = 'backup' as const;
      if (type === 'backup.start')
        return makeEvent(type, { jobId, jobType, data: startData('repo-x', 'pg') });
      if (type === 'backup.completed')
        return makeEvent(type, {
          jobId,
          jobType,
          data: completedData('repo-x', 'pg', [
            { diskKey: 'disk-2000', changeId: 'u/1', bytesTransferred: 1 },
          ]),
        });
      return makeEvent(type, {
        jobId,
        jobType,
        data: { code: 'COPY_FAILED', message: 'x', retryable: false },
      });
    };
    const attempts = [
      ['runner', 'backup.start'],
      ['hub', 'backup.completed'],
      ['hub', 'backup.failed'],
    ] as const;
    for (const [user, type] of attempts) {
      const nc = await as(user);
      try {
        const event = forbidden(type);
        await expect(publishEvent(jetstream(nc, { timeout: 2000 }), topo, event)).rejects.toThrow();
      } finally {
        await nc.close().catch(() => undefined);
      }
    }
    expect(await jobIdsInStream()).not.toContain(jobId);
    // The server says who tried what.
    await waitFor('the violations in the server log', async () =>
      attempts.every(([user, type]) =>
        serverLog.includes(`Publish Violation - User "${user}", Subject "${type}"`),
      ),
    );
  });

  it('lets only the ledger answer ledger queries', async () => {
    for (const user of ['hub', 'runner'] as const) {
      const nc = await as(user);
      try {
        const sub = nc.subscribe('ledger.jobs.get');
        const closedWith = await sub.closed;
        expect(String(closedWith)).toContain(
          'Permissions Violation for Subscription to "ledger.jobs.get"',
        );
      } finally {
        await nc.close().catch(() => undefined);
      }
    }
    // The real ledger still answers the hub.
    const hub = await as('hub');
    try {
      const reply = await hub.request('ledger.vms.list', '{}', { timeout: 5000 });
      expect(reply.json<{ ok: boolean }>()).toMatchObject({ ok: true });
    } finally {
      await hub.close();
    }
  });

  it('keeps every secret out of every service log line: NATS passwords, the API token, the MySQL password', async () => {
    const logs = system.logs();
    for (const service of ['ledger', 'hub', 'appliance-runner'])
      // they did log
      expect(logs).toContain(`"service":"${service}"`);
    const secrets = [passwords.ledger, passwords.hub, passwords.runner, apiToken];
    const mysqlPassword = new URL(testServers().mysqlUrl).password;
    if (mysqlPassword) secrets.push(decodeURIComponent(mysqlPassword));
    for (const secret of secrets) expect(logs).not.toContain(secret);
  });
});
