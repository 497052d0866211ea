/**
 * The `tidemark` CLI as a user runs it: a real process (`node services/cli/dist/main.js`, built
 * by `tsc -b`) against the real hub, started in-process, and a real ledger on real NATS and
 * MariaDB/MySQL. No runner exists here: the test publishes `backup.progress`,
 * `backup.completed` and `backup.failed` as one would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { HubConfigSchema } from '@tidemark/hub/config';
import { startHub } from '@tidemark/hub/hub';
import { createLogger, type JobType } from '@tidemark/shared';
import { uniqueName } from '../support/env';
import { completedData, createLedgerWorld, type LedgerWorld } from '../support/ledger-harness';

const CLI = resolve(__dirname, '../../services/cli/dist/main.js');
const GiB = 2 ** 30;
// VMware's shape, spaces included: they must survive the round trip into the table.
const CHANGE_ID_0 = '52 66 8c 2d a7 c5 c5 68-c5 d2 8d 04 79 f5 fd 7d/17';
const CHANGE_ID_1 = '52 0b 91 7e 10 aa 3f 02-9c 44 e1 5b 0d 7a 66 c3/4';

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface RunningCli {
  readonly stdout: string;
  readonly stderr: string;
  /** Resolves with the first match of `pattern` in the stream; rejects if the process ends first. */
  waitFor(stream: 'stdout' | 'stderr', pattern: RegExp): Promise<RegExpMatchArray>;
  done: Promise<CliResult>;
}

describe('tidemark CLI against a real hub and ledger', () => {
  const token = uniqueName('secret-token-');
  let world: LedgerWorld;
  let hub: { url: string; close(): Promise<void> };
  const children = new Set<ChildProcess>();

  /** Runs the CLI with the hub's URL and token in its environment. */
  function startCli(args: string[], env: Record<string, string> = {}): RunningCli {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, TIDEMARK_URL: hub.url, TIDEMARK_API_TOKEN: token, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    const out = { stdout: '', stderr: '' };
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out.stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (out.stderr += s));
    const done = new Promise<CliResult>((resolveDone, reject) => {
      child.on('error', reject);
      child.on('close', (code) => {
        children.delete(child);
        resolveDone({ code, ...out });
      });
    });
    return {
      get stdout() {
        return out.stdout;
      },
      get stderr() {
        return out.stderr;
      },
      done,
      waitFor(stream, pattern) {
        return new Promise((resolveMatch, reject) => {
          const check = () => {
            const match = out[stream].match(pattern);
            if (!match) return false;
            child[stream].off('data', check);
            resolveMatch(match);
            return true;
          };
          if (check()) return;
          child[stream].on('data', check);
          void done.then(() => {
            if (!check()) {
              reject(
                new Error(
                  `tidemark ${args.join(' ')} ended before ${stream} matched ${pattern}\n` +
                    `stdout:\n${out.stdout}\nstderr:\n${out.stderr}`,
                ),
              );
            }
          });
        });
      },
    };
  }

  const cli = (args: string[], env?: Record<string, string>) => startCli(args, env).done;

  /** `--json` output is one JSON document. */
  async function cliJson<T = Record<string, unknown>>(args: string[]): Promise<T> {
    const result = await cli(['--json', ...args]);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    return JSON.parse(result.stdout) as T;
  }

  /** A VM with two 4 GiB disks and a repository to back it up into. */
  async function vmAndRepository(): Promise<{ vmName: string; repositoryId: string }> {
    const vmName = uniqueName('pg');
    const added = await cli([
      'vm',
      'add',
      vmName,
      '--disk',
      `disk-0=/var/lib/vms/${vmName}/disk-0.qcow2`,
      '--disk',
      `disk-1=/var/lib/vms/${vmName}/disk-1.qcow2`,
    ]);
    expect(added.code).toBe(0);
    const repo = await cliJson<{ id: string }>([
      'repo',
      'add',
      uniqueName('repo'),
      '/srv/tidemark',
    ]);
    return { vmName, repositoryId: repo.id };
  }

  function completeJob(jobId: string, jobType: JobType, repositoryId: string, vmName: string) {
    return world.publish(
      'backup.completed',
      jobId,
      completedData(repositoryId, vmName, [
        { diskKey: 'disk-0', changeId: CHANGE_ID_0, bytesTransferred: GiB, bytesTotal: 4 * GiB },
        {
          diskKey: 'disk-1',
          changeId: CHANGE_ID_1,
          bytesTransferred: 2 * GiB,
          bytesTotal: 4 * GiB,
        },
      ]),
      { jobType },
    );
  }

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -b\` first`);
    world = await createLedgerWorld();
    await world.startLedger();
    const config = HubConfigSchema.parse({
      TIDEMARK_NATS_URL: world.env.TIDEMARK_NATS_URL,
      TIDEMARK_BUS_PREFIX: world.env.TIDEMARK_BUS_PREFIX,
      TIDEMARK_HUB_PORT: '0',
      TIDEMARK_API_TOKEN: token,
      TIDEMARK_LOG_LEVEL: 'silent',
    });
    hub = await startHub(config, createLogger('hub', 'silent'));
  });

  afterEach(() => {
    for (const child of children) child.kill();
  });

  afterAll(async () => {
    await hub?.close();
    await world?.close();
  });

  it('registers VMs, repositories and policies, and lists them', async () => {
    const vmName = uniqueName('pg');
    const added = await cli(['vm', 'add', vmName, '--disk', 'disk-0=/var/lib/vms/a.qcow2']);
    expect(added).toMatchObject({ code: 0, stderr: '' });
    expect(added.stdout).toContain(`VM ${vmName} registered with 1 disk`);
    expect(added.stdout).toMatch(/^disk-0 +qemu +\/var\/lib\/vms\/a\.qcow2$/m);

    const repo = await cliJson<{ id: string; name: string }>([
      'repo',
      'add',
      uniqueName('repo'),
      '/srv/tidemark',
    ]);
    const policy = await cliJson<{ id: string; schedule: string; retention_count: number }>([
      'policy',
      'add',
      uniqueName('nightly'),
      '--schedule',
      '0 2 * * *',
      '--retention',
      '7',
    ]);
    expect(policy).toMatchObject({ schedule: '0 2 * * *', retention_count: 7 });

    const vms = await cliJson<{ vms: { vm_name: string }[] }>(['vm', 'list']);
    expect(vms.vms.map((v) => v.vm_name)).toContain(vmName);
    const repos = await cliJson<{ repositories: { id: string }[] }>(['repo', 'list']);
    expect(repos.repositories.map((r) => r.id)).toContain(repo.id);
    const policies = await cliJson<{ policies: { id: string }[] }>(['policy', 'list']);
    expect(policies.policies.map((p) => p.id)).toContain(policy.id);

    const table = await cli(['repo', 'list']);
    expect(table.stdout).toMatch(/^ID +NAME +PATH +CREATED$/m);
    expect(table.stdout).toMatch(new RegExp(`^${repo.id} +${repo.name} +/srv/tidemark `, 'm'));
  });

  it('follows a backup: the job id first, a line per progress change, then the change_ids', async () => {
    const { vmName, repositoryId } = await vmAndRepository();
    const run = startCli(['backup', 'start', vmName, '--repo', repositoryId, '--follow']);

    const [, jobId] = await run.waitFor('stdout', /^backup (\S+) queued: full backup of /);
    await run.waitFor('stderr', new RegExp(`^${jobId} queued$`, 'm'));
    const progress = (sequence: number, done0: number, done1: number) =>
      world.publish('backup.progress', jobId, {
        phase: 'copying',
        sequence,
        bytesPerSecond: 256 * 2 ** 20,
        disks: [
          { diskKey: 'disk-0', bytesDone: done0, bytesTotal: 4 * GiB },
          { diskKey: 'disk-1', bytesDone: done1, bytesTotal: 4 * GiB },
        ],
      });
    await progress(0, GiB, 0);
    await run.waitFor(
      'stderr',
      /running copying 1\.0 GiB \/ 8\.0 GiB \(12%\) 256\.0 MiB\/s ETA 28s/,
    );
    await progress(1, 2 * GiB, 2 * GiB);
    await run.waitFor('stderr', /running copying 4\.0 GiB \/ 8\.0 GiB \(50%\)/);
    await completeJob(jobId, 'backup', repositoryId, vmName);

    const result = await run.done;
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`backup ${jobId} completed: 3.0 GiB transferred in`);
    expect(result.stdout).toMatch(new RegExp(`^disk-0 +${CHANGE_ID_0} +1\\.0 GiB$`, 'm'));
    expect(result.stdout).toMatch(new RegExp(`^disk-1 +${CHANGE_ID_1} +2\\.0 GiB$`, 'm'));
    // Not a terminal: one plain line per change, never a redrawn bar.
    const lines = result.stderr.trim().split('\n');
    expect(lines[0]).toBe(`${jobId} queued`);
    expect(lines.at(-1)).toBe(`${jobId} completed`);
    expect(new Set(lines).size).toBe(lines.length);
    expect(result.stderr).not.toContain('\r');
    expect(result.stdout + result.stderr).not.toContain(token);
  });

  it('starts a backup with --json, then shows and lists it once it completed', async () => {
    const { vmName, repositoryId } = await vmAndRepository();
    const accepted = await cliJson<{ backup_id: string; status: string; disks: unknown[] }>([
      'backup',
      'start',
      vmName,
      '--repo',
      repositoryId,
      '--type',
      'full',
    ]);
    expect(accepted).toMatchObject({ status: 'queued', backup_type: 'full' });
    expect(accepted.disks).toHaveLength(2);
    const jobId = accepted.backup_id;
    await completeJob(jobId, 'backup', repositoryId, vmName);
    await world.waitForJob(jobId, (row) => row.status === 'completed');

    const job = await cliJson(['backup', 'show', jobId]);
    expect(job).toMatchObject({
      backup_id: jobId,
      status: 'completed',
      disks: expect.arrayContaining([
        expect.objectContaining({ disk_key: 'disk-0', change_id: CHANGE_ID_0 }),
        expect.objectContaining({ disk_key: 'disk-1', change_id: CHANGE_ID_1 }),
      ]),
    });
    const shown = await cli(['backup', 'show', jobId]);
    expect(shown.stdout).toMatch(/^status +completed$/m);
    expect(shown.stdout).toMatch(
      new RegExp(`^disk-0 +${CHANGE_ID_0} +- +1\\.0 GiB +4\\.0 GiB `, 'm'),
    );

    const listed = await cliJson<{ backups: { backup_id: string }[] }>([
      'backup',
      'list',
      '--vm',
      vmName,
      '--status',
      'completed',
      '--limit',
      '5',
    ]);
    expect(listed.backups.map((b) => b.backup_id)).toEqual([jobId]);
    const table = await cli(['backup', 'list', '--vm', vmName]);
    expect(table.stdout).toMatch(
      new RegExp(`^${jobId} +${vmName} +full +completed +3\\.0 GiB `, 'm'),
    );
  });

  it('with --json --follow prints only the final job; a failed job exits 1 with its error', async () => {
    const { vmName, repositoryId } = await vmAndRepository();
    const run = startCli(['--json', 'backup', 'start', vmName, '--repo', repositoryId, '--follow']);
    // stdout holds only the final document: the id comes from the progress lines on stderr.
    const [, jobId] = await run.waitFor('stderr', /^(\S+) queued$/m);
    await world.publish('backup.failed', jobId, {
      code: 'CLIENT_EXITED',
      message: 'qemu-img exited with status 1',
      retryable: true,
    });

    const result = await run.done;
    expect(result.code).toBe(1);
    const job = JSON.parse(result.stdout) as Record<string, unknown>;
    expect(job).toMatchObject({
      backup_id: jobId,
      status: 'failed',
      error_code: 'CLIENT_EXITED',
      error_message: 'qemu-img exited with status 1',
    });
    expect(result.stderr).toContain(
      `backup ${jobId} failed: CLIENT_EXITED: qemu-img exited with status 1 (retryable)`,
    );
  });

  it('cancels a followed backup from another shell: the follower exits 3 saying so', async () => {
    const { vmName, repositoryId } = await vmAndRepository();
    const run = startCli(['backup', 'start', vmName, '--repo', repositoryId, '--follow']);
    const [, jobId] = await run.waitFor('stdout', /^backup (\S+) queued: /);

    const cancel = await cli(['backup', 'cancel', jobId, '--reason', 'wrong VM']);
    expect(cancel).toMatchObject({ code: 0, stderr: '' });
    expect(cancel.stdout).toMatch(
      new RegExp(`^backup ${jobId} cancel requested \\(event \\S+\\)$`, 'm'),
    );

    const result = await run.done;
    expect(result.code).toBe(3);
    expect(result.stderr).toContain(`backup ${jobId} cancelled`);
    expect(result.stderr).toContain('wrong VM');

    const again = await cli(['backup', 'cancel', jobId]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('already ended as cancelled');
  });

  it('follows a replication to completion and shows it by its job_id', async () => {
    const { vmName, repositoryId } = await vmAndRepository();
    const run = startCli(['replicate', 'start', vmName, '--repo', repositoryId, '--follow']);
    const [, jobId] = await run.waitFor('stdout', /^replication (\S+) queued: /);
    await completeJob(jobId, 'replication', repositoryId, vmName);

    const result = await run.done;
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`^disk-1 +${CHANGE_ID_1} +2\\.0 GiB$`, 'm'));
    const job = await cliJson(['replicate', 'show', jobId]);
    expect(job).toMatchObject({ job_id: jobId, job_type: 'replication', status: 'completed' });
  });

  it("prints the API's error and each detail, and exits 1", async () => {
    // What the hub itself answers, so the test holds the CLI to the hub's words.
    const answer = async (path: string, init: RequestInit = {}) =>
      (await (await fetch(`${hub.url}${path}`, init)).json()) as {
        error: string;
        details: { path: string; message: string }[];
      };

    const wrongToken = 'not-the-token-0123456789';
    const refused = await cli(['vm', 'list', '--token', wrongToken]);
    const unauthorized = await answer('/api/v1/vms', {
      headers: { authorization: `Bearer ${wrongToken}` },
    });
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toContain(`error: ${unauthorized.error}`);
    expect(refused.stderr).not.toContain(wrongToken);

    const invalid = await cli(['vm', 'add', 'bad..name', '--disk', 'disk-0=relative/path']);
    const badRequest = await answer('/api/v1/vms', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        vm_name: 'bad..name',
        disks: [{ disk_key: 'disk-0', driver: 'qemu', path: 'relative/path' }],
      }),
    });
    expect(invalid.code).toBe(1);
    expect(badRequest.details.length).toBeGreaterThan(0);
    expect(invalid.stderr).toContain(`error: ${badRequest.error}`);
    for (const d of badRequest.details) expect(invalid.stderr).toContain(`${d.path}: ${d.message}`);

    const missing = await cli(['backup', 'show', 'backup-none']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(
      `error: ${
        (
          await answer('/api/v1/backups/backup-none', {
            headers: { authorization: `Bearer ${token}` },
          })
        ).error
      }`,
    );
  });

  it('exits 2 on a bad argument, before asking the hub', async () => {
    const badType = await cli(['backup', 'start', 'pg01', '--repo', 'repo-1', '--type', 'weekly']);
    expect(badType.code).toBe(2);
    expect(badType.stderr).toContain("argument 'weekly' is invalid");
    const noDisk = await cli(['vm', 'add', 'pg01']);
    expect(noDisk.code).toBe(2);
    expect(noDisk.stderr).toContain("required option '--disk <disk_key=path>' not specified");
    const badDisk = await cli(['vm', 'add', 'pg01', '--disk', 'no-path']);
    expect(badDisk.code).toBe(2);
  });

  it('names the URL of a hub it cannot reach, and exits 1', async () => {
    const port = await closedPort();
    const result = await cli(['vm', 'list'], { TIDEMARK_URL: `http://127.0.0.1:${port}` });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`could not reach the hub at http://127.0.0.1:${port}`);
  });
});

/** A local port nothing listens on. */
function closedPort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}
