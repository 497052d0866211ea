/**
 * Smoke test of the compose stack (docker-compose.yml): builds the services' images from this
 * tree's dist/ (`tsc -b` has run), brings NATS, MySQL, the ledger, the hub and the
 * appliance-runner up under a project name of its own, host ports picked by Docker, waits until
 * every container is healthy, then takes a full backup of a small qcow2 disk through the hub's
 * REST API only. The disk and the repository live in a directory mounted into the runner at
 * the same path. The stack is taken down (`down -v`) whatever happens; its logs are printed
 * when something failed.
 *
 * Images: the compose file's official defaults, unless TIDEMARK_TEST_NATS_IMAGE,
 * TIDEMARK_TEST_MYSQL_IMAGE, TIDEMARK_TEST_NODE_IMAGE or TIDEMARK_TEST_RUNNER_BASE_IMAGE name
 * others (.ci/run names the local stand-ins of infra/images/build-standins.sh); an official
 * image that is neither here nor pullable (no registry) is replaced by its stand-in, saying so.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { uniqueName } from '../support/env';

const ROOT = resolve(__dirname, '../..');
const PROJECT = uniqueName('tidemark-compose-');
const TOKEN = randomBytes(16).toString('hex');
const HUB_PORT = 8082;

/** The variable the compose file reads, the test's variable that overrides it, its default. */
const IMAGES = [
  {
    compose: 'TIDEMARK_NATS_IMAGE',
    test: 'TIDEMARK_TEST_NATS_IMAGE',
    official: 'nats:2.10-alpine',
    standin: 'tidemark/nats-standin:local',
  },
  {
    compose: 'TIDEMARK_MYSQL_IMAGE',
    test: 'TIDEMARK_TEST_MYSQL_IMAGE',
    official: 'mysql:8.4',
    standin: 'tidemark/mariadb-standin:local',
  },
  {
    compose: 'TIDEMARK_NODE_IMAGE',
    test: 'TIDEMARK_TEST_NODE_IMAGE',
    official: 'node:20-bookworm-slim',
    standin: 'tidemark/node-standin:local',
  },
  {
    compose: 'TIDEMARK_RUNNER_BASE_IMAGE',
    test: 'TIDEMARK_TEST_RUNNER_BASE_IMAGE',
    official: 'node:20-bookworm-slim',
    standin: 'tidemark/node-qemu-standin:local',
  },
];

function say(message: string): void {
  process.stderr.write(`[compose smoke] ${message}\n`);
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command without a shell; resolves with its output whatever its exit status. */
function run(cmd: string, args: string[], timeoutMs: number, env = process.env): Promise<Run> {
  return new Promise((resolveRun) => {
    execFile(
      cmd,
      args,
      { cwd: ROOT, env, timeout: timeoutMs, maxBuffer: 64 * 2 ** 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        const why = err && code === -1 ? `\n${err.message}` : '';
        resolveRun({ code, stdout, stderr: stderr + why });
      },
    );
  });
}

async function must(cmd: string, args: string[], timeoutMs: number, env = process.env) {
  const r = await run(cmd, args, timeoutMs, env);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

/** The image the variable names; else the official one if it is here or can be pulled; else the stand-in. */
async function chooseImage(i: (typeof IMAGES)[number]): Promise<string> {
  const named = process.env[i.test];
  if (named) return named;
  if ((await run('docker', ['image', 'inspect', i.official], 30_000)).code === 0) return i.official;
  const pull = await run('docker', ['pull', i.official], 120_000);
  if (pull.code === 0) return i.official;
  if ((await run('docker', ['image', 'inspect', i.standin], 30_000)).code === 0) {
    say(
      `${i.official} cannot be pulled (${pull.stderr.trim().split('\n')[0]}); using ${i.standin}`,
    );
    return i.standin;
  }
  return i.official; // compose will say what is missing
}

interface Api<T> {
  status: number;
  body: T;
}

describe('docker-compose stack', () => {
  let dataDir: string;
  let env: NodeJS.ProcessEnv;
  let hubUrl: string;
  let passed = false;
  let started = false;

  const compose = (args: string[], timeoutMs: number) =>
    must('docker-compose', ['-p', PROJECT, ...args], timeoutMs, env);

  async function api<T>(method: string, path: string, body?: unknown): Promise<Api<T>> {
    const res = await fetch(`${hubUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${TOKEN}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
  }

  /** Waits until every container of the project is healthy; fails at once if one stopped. */
  async function waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ids = (await compose(['ps', '-q'], 30_000)).split('\n').filter(Boolean);
      const states = (
        await must(
          'docker',
          ['inspect', '-f', '{{.Name}} {{.State.Status}} {{.State.Health.Status}}', ...ids],
          30_000,
        )
      )
        .trim()
        .split('\n');
      if (ids.length === 5 && states.every((s) => s.endsWith(' running healthy'))) return;
      const down = states.filter((s) => !s.includes(' running '));
      if (down.length > 0) throw new Error(`containers stopped: ${down.join(', ')}`);
      if (Date.now() > deadline) {
        throw new Error(`not healthy after ${timeoutMs} ms: ${states.join(', ')}`);
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  beforeAll(async () => {
    const t0 = Date.now();
    // Where the runner finds disks and writes repositories: the same path inside and out.
    dataDir = await mkdtemp(join(tmpdir(), 'tidemark-compose-'));
    const images = await Promise.all(IMAGES.map(chooseImage));
    env = {
      ...process.env,
      ...Object.fromEntries(IMAGES.map((i, n) => [i.compose, images[n]])),
      // Images of their own, so a developer's `local` ones are left alone.
      TIDEMARK_IMAGE_TAG: 'e2e',
      TIDEMARK_API_TOKEN: TOKEN,
      TIDEMARK_MYSQL_PASSWORD: randomBytes(12).toString('hex'),
      TIDEMARK_DATA_DIR: dataDir,
      TIDEMARK_PUBLISH_ADDR: '127.0.0.1',
      // Empty: Docker picks free host ports (this machine's own NATS and MariaDB hold 4222, 3306).
      TIDEMARK_HUB_HOST_PORT: '',
      TIDEMARK_NATS_HOST_PORT: '',
      TIDEMARK_NATS_MONITOR_HOST_PORT: '',
      TIDEMARK_MYSQL_HOST_PORT: '',
    };
    say(`project ${PROJECT}, images ${images.join(', ')}`);

    await compose(['build', '--parallel'], 150_000);
    say(`images built in ${Date.now() - t0} ms`);
    started = true;
    await compose(['up', '-d', '--no-build'], 90_000);
    await waitHealthy(60_000);
    const hostPort = (await compose(['port', 'hub', String(HUB_PORT)], 30_000)).trim();
    hubUrl = `http://${hostPort}`;
    say(`stack healthy in ${Date.now() - t0} ms, hub at ${hubUrl}`);
  }, 240_000);

  afterAll(async () => {
    if (started) {
      if (!passed) {
        const logs = await run(
          'docker-compose',
          ['-p', PROJECT, 'logs', '--no-color', '--tail=200'],
          30_000,
          env,
        );
        say(`logs of the stack:\n${logs.stdout}${logs.stderr}`);
      }
      const down = await run(
        'docker-compose',
        ['-p', PROJECT, 'down', '-v', '--remove-orphans', '--timeout', '10'],
        90_000,
        env,
      );
      if (down.code !== 0) say(`docker-compose down failed: ${down.stderr}`);
    }
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }, 120_000);

  it('takes a full backup through the hub and records the change_id', async () => {
    const disk = join(dataDir, 'vms', 'smoke', 'disk-0.qcow2');
    await mkdir(join(dataDir, 'vms', 'smoke'), { recursive: true });
    await must('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M'], 30_000);
    await must('qemu-io', ['-c', 'write -P 0x5a 0 1M', disk], 30_000);

    const vm = await api('POST', '/api/v1/vms', {
      vm_name: 'smoke',
      disks: [{ disk_key: 'disk-0', driver: 'qemu', path: disk }],
    });
    expect(vm.status).toBe(201);
    const repo = await api<{ id: string }>('POST', '/api/v1/repositories', {
      name: 'smoke',
      path: join(dataDir, 'repository'),
    });
    expect(repo.status).toBe(201);
    const accepted = await api<{ backup_id: string }>('POST', '/api/v1/backups', {
      vm_name: 'smoke',
      repository_id: repo.body.id,
      backup_type: 'full',
    });
    expect(accepted.status).toBe(202);

    interface Job {
      status: string;
      change_id: string | null;
      error_code: string | null;
      error_message: string | null;
      disks: { disk_key: string; change_id: string | null; target_path: string | null }[];
    }
    const deadline = Date.now() + 60_000;
    let job: Job;
    for (;;) {
      const got = await api<Job>('GET', `/api/v1/backups/${accepted.body.backup_id}`);
      expect(got.status).toBe(200);
      job = got.body;
      if (!['queued', 'running'].includes(job.status) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect({ status: job.status, error: job.error_code, message: job.error_message }).toEqual({
      status: 'completed',
      error: null,
      message: null,
    });
    expect(job.disks).toHaveLength(1);
    const [d] = job.disks;
    expect(d.disk_key).toBe('disk-0');
    expect(d.change_id).toEqual(expect.any(String));
    expect(d.change_id).not.toBe('');
    expect(job.change_id).toBe(d.change_id);
    expect(d.target_path).toEqual(expect.stringContaining(join(dataDir, 'repository')));
    // Written by the runner inside its container, found here at the same path.
    expect((await stat(d.target_path!)).isFile()).toBe(true);
    expect(await must('qemu-img', ['info', '--output=json', d.target_path!], 30_000)).toMatch(
      /"format": "qcow2"/,
    );
    // The copy holds what the disk holds (compare reads the backing chain, if any).
    await must('qemu-img', ['compare', '-U', disk, d.target_path!], 30_000);
    passed = true;
  }, 90_000);
});
