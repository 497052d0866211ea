/**
 * The appliance-runner between real NATS JetStream, the real ledger on MariaDB/MySQL and the
 * real backup client copying real qcow2 images.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { createLogger } from '@tidemark/shared';
import { manifestPath, readManifest } from '@tidemark/backup-client/protocol';
import { RunnerConfigSchema } from '@tidemark/appliance-runner/config';
import { startRunner, type Runner } from '@tidemark/appliance-runner/runner';
import {
  bitmapNames,
  clientMain,
  createImage,
  MiB,
  run,
  sameContent,
  startStorageDaemon,
  tempDir,
  type StorageDaemon,
  trackingBitmap,
  writeDisk,
} from '../support/disks';
import { fakeClientFile } from '../support/fake-clients';
import { filesUnder, processesMentioning } from '../support/leftovers';
import { QmpClient } from '@tidemark/backup-client/qmp/client';
import { startTestHub } from '../support/hub-harness';
import { createLedgerWorld, seedReferences, type LedgerWorld } from '../support/ledger-harness';
import { uniqueName, waitFor } from '../support/env';

const tmp = tempDir('tidemark-runner-');
const runnerMain = clientMain.replace('backup-client', 'appliance-runner');
let world: LedgerWorld;
let repositoryId: string;
const runners: Runner[] = [];
/** Runner processes a test started; whatever one leaves running is killed after it. */
const processes = new Set<ChildProcess>();

beforeAll(async () => {
  world = await createLedgerWorld();
  await world.startLedger();
  ({ repositoryId } = await seedReferences(world));
});
afterEach(async () => {
  for (const p of processes) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  processes.clear();
  await Promise.all(runners.splice(0).map((r) => r.stop(0)));
});
afterAll(async () => {
  await world.close();
  tmp.remove();
});

/**
 * What the suite's runners may touch: jobs write under `<tmp>/repo`, read disks in `<tmp>`
 * (tests of the refusals narrow these).
 */
const roots = () => ({ TIDEMARK_REPOSITORY_ROOTS: repoRoot(), TIDEMARK_SOURCE_ROOTS: tmp.dir });

async function runner(overrides: Record<string, string> = {}): Promise<Runner> {
  const config = RunnerConfigSchema.parse({
    ...world.env,
    ...roots(),
    TIDEMARK_RUNNER_WORK_DIR: tmp.dir,
    TIDEMARK_RUNNER_ID: uniqueName('runner-'),
    TIDEMARK_RUNNER_CONCURRENCY: '1',
    // jest would resolve the installed client to its TypeScript source; run the built one.
    TIDEMARK_RUNNER_CLIENT: clientMain,
    ...overrides,
  });
  const r = await startRunner(
    config,
    createLogger('appliance-runner', process.env.RUNNER_TEST_LOG === '1' ? 'debug' : 'silent'),
  );
  runners.push(r);
  return r;
}

/** The repository every job of this suite writes into. */
const repoRoot = () => join(tmp.dir, 'repo');

/** A VM with one small disk that holds data, and a `backup.start` for a full backup of it. */
function vmWithDisk(name: string): { source: string; target: string } {
  const source = join(tmp.dir, `${name}.qcow2`);
  createImage(source, 6 * MiB + 512);
  writeDisk(source, [{ offset: 1 * MiB, length: 2 * MiB, pattern: 0x5a }]);
  return { source, target: join(tmp.dir, 'repo', name, `job-${name}`, 'disk-0.qcow2') };
}

async function startFull(jobId: string, vm: string, disk: { source: string; target: string }) {
  await world.publish('backup.start', jobId, {
    vmName: vm,
    backupType: 'full',
    repositoryId,
    repositoryPath: repoRoot(),
    disks: [{ diskKey: 'disk-0', source: disk.source, targetPath: disk.target }],
  });
}

/** The incremental on `parentId` of a VM's one disk, into `<repo>/<vm>/<jobId>/disk-0.qcow2`. */
async function startIncremental(
  jobId: string,
  vm: string,
  disk: { source: string; target: string },
  parentId: string,
  previousChangeId: string,
) {
  await world.publish('backup.start', jobId, {
    vmName: vm,
    backupType: 'incremental',
    repositoryId,
    repositoryPath: repoRoot(),
    parentJobId: parentId,
    disks: [
      {
        diskKey: 'disk-0',
        source: disk.source,
        targetPath: join(tmp.dir, 'repo', vm, jobId, 'disk-0.qcow2'),
        backingPath: disk.target,
        previousChangeId,
      },
    ],
  });
}

/** The runner as its own process, as it runs on an appliance. */
function runnerProcess(env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, [runnerMain], {
    env: {
      PATH: process.env.PATH,
      ...world.env,
      ...roots(),
      TIDEMARK_RUNNER_WORK_DIR: tmp.dir,
      TIDEMARK_RUNNER_CLIENT: clientMain,
      TIDEMARK_LOG_LEVEL: process.env.RUNNER_TEST_LOG === '1' ? 'info' : 'warn',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  processes.add(child);
  return child;
}

/** Resolves on the first progress event of `jobId` that shows the copy under way. */
async function midCopy(jobId: string): Promise<void> {
  const progress = world.nc.subscribe(world.topo.subjectFor('backup.progress'));
  try {
    for await (const m of progress) {
      const ev = m.json<{
        jobId: string;
        data: { disks: Array<{ bytesDone: number; bytesTotal: number }> };
      }>();
      const d = ev.data.disks[0];
      if (ev.jobId === jobId && d && d.bytesDone > 0 && d.bytesDone < d.bytesTotal) return;
    }
  } finally {
    progress.unsubscribe();
  }
}

/**
 * A runner process copying, at 20 MB/s, a full backup of a 160 MiB disk of data (8 s): resolves
 * once its progress shows the copy under way.
 */
async function runnerProcessMidCopy(env: Record<string, string>) {
  const vm = uniqueName('vm');
  const source = join(tmp.dir, `${vm}.qcow2`);
  createImage(source, 160 * MiB);
  writeDisk(source, [{ offset: 0, length: 160 * MiB, pattern: 0x42 }]);
  const target = join(tmp.dir, 'repo', vm, 'job', 'disk-0.qcow2');
  const jobId = uniqueName('job-');
  const a = runnerProcess({ TIDEMARK_COPY_MAX_MBPS: '20', ...env });
  await startFull(jobId, vm, { source, target });
  await midCopy(jobId);
  return { a, source, target, jobId };
}

/** What a running disk's daemon holds: its exports, block jobs and tidemark block nodes. */
async function daemonObjects(daemon: StorageDaemon) {
  const qmp = await QmpClient.connect(daemon.qmpSocket);
  try {
    const exports = await qmp.execute<Array<{ id: string }>>('query-block-exports');
    const jobs = await qmp.execute<unknown[]>('query-block-jobs');
    const nodes = await qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes', {
      flat: true,
    });
    return {
      exports: exports.map((e) => e.id),
      jobs,
      nodes: nodes.map((n) => n['node-name']).filter((n) => n.startsWith('tidemark')),
    };
  } finally {
    await qmp.close();
  }
}

describe('appliance-runner', () => {
  it('keeps the previous change tracking on the source when the ledger refuses the completion', async () => {
    const r = await runner();
    const idle = () => waitFor('runner idle', async () => r.running() === 0, 30_000);
    const vm = uniqueName('vm');
    const disk = {
      source: join(tmp.dir, `${vm}.qcow2`),
      target: join(tmp.dir, 'repo', vm, 'full', 'disk-0.qcow2'),
    };
    createImage(disk.source, 64 * MiB);
    writeDisk(disk.source, [{ offset: 0, length: 1 * MiB, pattern: 0x32 }]);
    const fullId = uniqueName('job-');
    await startFull(fullId, vm, disk);
    await world.waitForJob(fullId, (j) => j.status === 'completed', 30_000);
    await idle();
    const [full] = await world.rows<{ change_id: string }>(
      'SELECT change_id FROM backup_disks WHERE job_id = ?',
      [fullId],
    );
    const base = trackingBitmap(full?.change_id as string, 'backup', repositoryId);
    expect(bitmapNames(disk.source).map((b) => b.name)).toEqual([base]);

    // An incremental slow enough (48 MiB at 20 MB/s) for another publisher's completion of the
    // same job, with other change_ids, to be recorded first: the runner's own is then refused.
    writeDisk(disk.source, [{ offset: 8 * MiB, length: 48 * MiB, pattern: 0x33 }]);
    const incId = uniqueName('job-');
    process.env.TIDEMARK_COPY_MAX_MBPS = '20';
    try {
      await startIncremental(incId, vm, disk, fullId, full?.change_id as string);
      await midCopy(incId);
    } finally {
      delete process.env.TIDEMARK_COPY_MAX_MBPS;
    }
    const other = `${(full?.change_id as string).split('/')[0]}/99`;
    await world.publish('backup.completed', incId, {
      vmName: vm,
      backupType: 'incremental',
      repositoryId,
      parentJobId: fullId,
      bytesTransferred: 1,
      disks: [{ diskKey: 'disk-0', changeId: other, bytesTransferred: 1 }],
    });
    await waitFor('the refusal', async () => r.stats().failed === 1, 30_000);
    await idle();
    const job = await world.job(incId);
    expect(job).toMatchObject({ status: 'completed', change_id: other });
    // The runner said so (COMPLETION_REJECTED; a job already completed ignores it).
    await waitFor('the rejection reported', async () => {
      const [row] = await world.rows<{ outcome: string }>(
        'SELECT outcome FROM processed_events WHERE event_id = ?',
        [`${incId}.failed.rejected`],
      );
      return row?.outcome === 'ignored';
    });
    // The base the ledger's record still builds on is on the source, and usable.
    const names = bitmapNames(disk.source);
    expect(names.map((b) => b.name)).toContain(base);
    expect(names.every((b) => !b.flags.includes('in-use'))).toBe(true);
    expect(r.stats().completed).toBe(1); // the full only
    // The refused completion is kept, as a dead letter naming both change_ids (then cleared,
    // so the suite's later checks for dead letters start empty).
    const letters = await world.deadLetters();
    expect(letters.map((l) => l.reason)).toEqual([
      expect.stringMatching(new RegExp(`already completed with change_id disk-0=${other}`)),
    ]);
    await world.jsm.streams.purge(world.topo.deadStream);
  });

  it('gives the client its job id and previous change_ids, and the change_ids reach the ledger', async () => {
    const r = await runner({ TIDEMARK_RUNNER_CLIENT: fakeClientFile(tmp.dir, 'record') });
    // The ledger shows a job completed as soon as the event is applied; the client then still
    // forgets the old bitmap (holding the image a moment). Wait for the runner to be idle.
    const idle = () => waitFor('runner idle', async () => r.running() === 0);
    const vm = uniqueName('vm');
    const disk = vmWithDisk(vm);
    const fullId = uniqueName('job-');
    await startFull(fullId, vm, disk);
    const full = await world.waitForJob(fullId, (j) => j.status === 'completed', 30_000);
    await idle();
    const [fullDisk] = await world.rows<{ change_id: string; target_path: string }>(
      'SELECT change_id, target_path FROM backup_disks WHERE job_id = ?',
      [full.id],
    );
    expect(fullDisk?.change_id).toMatch(/^[0-9a-f-]{36}\/1$/);
    expect(sameContent(disk.source, disk.target).same).toBe(true);

    // The incremental: the child must see the full's change_id for its disk.
    writeDisk(disk.source, [{ offset: 0, length: 64 * 1024, pattern: 0x11 }]);
    const incId = uniqueName('job-');
    const incTarget = join(tmp.dir, 'repo', vm, incId, 'disk-0.qcow2');
    await startIncremental(incId, vm, disk, fullId, fullDisk?.change_id as string);
    await world.waitForJob(incId, (j) => j.status === 'completed', 30_000);
    await idle();
    const seen = JSON.parse(readFileSync(join(tmp.dir, `client-env-${incId}.json`), 'utf8')) as {
      TIDEMARK_JOB_ID: string;
      TIDEMARK_PREVIOUS_CHANGE_ID: string;
      argv: string[];
      envKeys: string[];
    };
    expect(seen.TIDEMARK_JOB_ID).toBe(incId);
    expect(JSON.parse(seen.TIDEMARK_PREVIOUS_CHANGE_ID)).toEqual({
      'disk-0': fullDisk?.change_id,
    });
    expect(seen.argv.slice(0, 2)).toEqual(['backup', '--job']);
    // Nothing of the runner's own environment (its NATS URL, tokens) leaks into the child.
    const expectedKeys = [
      'PATH',
      'TIDEMARK_EXIT_WITH_PARENT',
      'TIDEMARK_JOB_ID',
      'TIDEMARK_LOG_LEVEL',
      'TIDEMARK_PREVIOUS_CHANGE_ID',
      'TIDEMARK_WORK_DIR',
    ];
    expect(seen.envKeys.filter((k) => !expectedKeys.includes(k))).toEqual([]);
    const [incDisk] = await world.rows<{ change_id: string; previous_change_id: string }>(
      'SELECT d.change_id, d.previous_change_id FROM backup_disks d JOIN backup_jobs j ON j.id = d.job_id WHERE j.id = ?',
      [(await world.job(incId))?.id],
    );
    expect(incDisk?.change_id).toMatch(/\/2$/);
    expect(sameContent(disk.source, incTarget).same).toBe(true);
  });

  it('spreads six jobs over two runners, each job run once', async () => {
    const a = await runner();
    const b = await runner();
    const jobs = Array.from({ length: 6 }, () => ({
      vm: uniqueName('vm'),
      jobId: uniqueName('job-'),
    }));
    for (const j of jobs) await startFull(j.jobId, j.vm, vmWithDisk(j.vm));
    for (const j of jobs) await world.waitForJob(j.jobId, (r) => r.status === 'completed', 60_000);
    await waitFor('runners idle', async () => a.running() + b.running() === 0);
    const sa = a.stats();
    const sb = b.stats();
    expect(sa.received + sb.received).toBe(6);
    expect(sa.started + sb.started).toBe(6);
    expect(sa.completed + sb.completed).toBe(6);
    expect(sa.started).toBeGreaterThan(0);
    expect(sb.started).toBeGreaterThan(0);
  });

  it.each([
    ['garbage', 'CLIENT_OUTPUT_INVALID'],
    ['exit', 'CLIENT_EXITED'],
  ] as const)('a client that prints %s ends the job failed with %s', async (mode, code) => {
    await runner({ TIDEMARK_RUNNER_CLIENT: fakeClientFile(tmp.dir, mode) });
    const vm = uniqueName('vm');
    const jobId = uniqueName('job-');
    await startFull(jobId, vm, vmWithDisk(vm));
    const job = await world.waitForJob(jobId, (j) => j.status === 'failed', 30_000);
    expect(job.error_code).toBe(code);
  });

  it('keeps a job longer than the ack wait alive: it is not redelivered while it runs', async () => {
    const slow = fakeClientFile(tmp.dir, 'slow');
    const a = await runner({ TIDEMARK_RUNNER_CLIENT: slow, TIDEMARK_RUNNER_ACK_WAIT_MS: '1500' });
    const b = await runner({ TIDEMARK_RUNNER_CLIENT: slow, TIDEMARK_RUNNER_ACK_WAIT_MS: '1500' });
    const vm = uniqueName('vm');
    const jobId = uniqueName('job-');
    // While the client is silent the runner still reports the job alive (the ledger's lease).
    const progress = world.nc.subscribe(world.topo.subjectFor('backup.progress'));
    const sequences: number[] = [];
    void (async () => {
      for await (const m of progress) {
        const ev = m.json<{ jobId: string; data: { phase: string; sequence: number } }>();
        if (ev.jobId === jobId && ev.data.phase === 'preparing') sequences.push(ev.data.sequence);
      }
    })();
    await startFull(jobId, vm, vmWithDisk(vm));
    await world.waitForJob(jobId, (j) => j.status === 'completed', 30_000);
    progress.unsubscribe();
    await new Promise((r) => setTimeout(r, 2000)); // a redelivery would show by now
    expect(a.stats().received + b.stats().received).toBe(1);
    expect(a.stats().started + b.stats().started).toBe(1);
    // One line from the client, then one every 500 ms (a third of the ack wait) for 4 s.
    expect(sequences.length).toBeGreaterThanOrEqual(5);
    expect([...sequences].sort((x, y) => x - y)).toEqual(sequences);
  });

  it('redoes the job of a runner SIGKILLed mid-copy on another runner, once, from a clean start', async () => {
    // Runner A copies at 20 MB/s, so it is killed in the middle of the copy.
    const { a, source, target, jobId } = await runnerProcessMidCopy({
      TIDEMARK_RUNNER_ID: 'runner-a',
      TIDEMARK_RUNNER_ACK_WAIT_MS: '2000',
    });
    a.kill('SIGKILL');
    await new Promise((r) => a.once('exit', r));
    // A's client notices its runner is gone and stops: no qemu-nbd of A's left behind.
    await waitFor(
      'runner A client gone',
      async () => {
        const ps = run('ps', ['-eo', 'args']);
        return !ps.includes(target) && !ps.includes(source);
      },
      10_000,
    );

    const b = await runner({ TIDEMARK_RUNNER_ACK_WAIT_MS: '2000' });
    await world.waitForJob(jobId, (j) => j.status === 'completed', 60_000);
    await waitFor('runner B done', async () => b.stats().completed === 1 && b.running() === 0);
    expect(sameContent(source, target).same).toBe(true);
    expect(
      await world.count(
        "SELECT COUNT(*) FROM processed_events WHERE job_id = ? AND event_type = 'backup.completed'",
        [jobId],
      ),
    ).toBe(1);
    expect(existsSync(`${target}.partial`)).toBe(false);
  });

  it('reports the finished copy of a runner that died before reporting it, copying nothing again', async () => {
    const vm = uniqueName('vm');
    const disk = vmWithDisk(vm);
    const jobId = uniqueName('job-');
    const a = runnerProcess({
      TIDEMARK_RUNNER_ID: 'runner-dies',
      TIDEMARK_RUNNER_ACK_WAIT_MS: '2000',
      TIDEMARK_RUNNER_CLIENT: fakeClientFile(tmp.dir, 'kill-runner'),
    });
    const killed = new Promise((r) => a.once('exit', (_code, signal) => r(signal)));
    await startFull(jobId, vm, disk);
    expect(await killed).toBe('SIGKILL');
    const copied = readFileSync(disk.target);
    const manifest = await readManifest(disk.target);

    const b = await runner({ TIDEMARK_RUNNER_ACK_WAIT_MS: '2000' });
    const job = await world.waitForJob(jobId, (j) => j.status === 'completed', 30_000);
    expect(job.change_id).toBe(manifest.changeId);
    await waitFor('runner B done', async () => b.stats().completed === 1 && b.running() === 0);
    expect(b.stats().started).toBe(0); // no client ran: nothing was copied again
    expect(readFileSync(disk.target).equals(copied)).toBe(true);
    expect(sameContent(disk.source, disk.target).same).toBe(true);
  });

  it('on SIGTERM takes no new job and fails a job still running after the grace period, retryable', async () => {
    const { a, target, jobId } = await runnerProcessMidCopy({
      TIDEMARK_RUNNER_ID: 'runner-term',
      TIDEMARK_RUNNER_GRACE_MS: '500',
    });
    const exited = new Promise<number | null>((r) => a.once('exit', (code) => r(code)));
    a.kill('SIGTERM');
    expect(await exited).toBe(0);
    const job = await world.waitForJob(jobId, (j) => j.status === 'failed', 10_000);
    expect(job.error_code).toBe('INTERRUPTED');
    expect(existsSync(target)).toBe(false);
    expect(existsSync(`${target}.partial`)).toBe(false);
    expect(run('ps', ['-eo', 'args'])).not.toContain(target);
  });

  it('fails a job whose repository is full REPOSITORY_FULL, not retryable, and leaves no file in it', async () => {
    // The repository is an 8 MiB tmpfs; the disk holds 24 MiB of data.
    // Under the runner's configured repository root (TIDEMARK_REPOSITORY_ROOTS).
    const repo = join(repoRoot(), uniqueName('repo-full-'));
    mkdirSync(repo, { recursive: true });
    run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', repo]);
    try {
      const r = await runner();
      const vm = uniqueName('vm');
      const source = join(tmp.dir, `${vm}.qcow2`);
      createImage(source, 32 * MiB);
      writeDisk(source, [{ offset: 0, length: 24 * MiB, pattern: 0x61 }]);
      const jobId = uniqueName('job-');
      await world.publish('backup.start', jobId, {
        vmName: vm,
        backupType: 'full',
        repositoryId,
        repositoryPath: repo,
        disks: [{ diskKey: 'disk-0', source, targetPath: join(repo, vm, jobId, 'disk-0.qcow2') }],
      });
      const job = await world.waitForJob(jobId, (j) => j.status === 'failed', 30_000);
      expect(job).toMatchObject({ error_code: 'REPOSITORY_FULL' });
      expect(Boolean(job.retryable)).toBe(false);
      expect(job.error_message).toContain(repo);
      expect(job.error_message).toMatch(/\d+ bytes free/);
      await waitFor('runner idle', async () => r.running() === 0);
      expect(r.stats()).toMatchObject({ received: 1, started: 1, failed: 1 });
      expect(filesUnder(repo, /./).filter((f) => !f.endsWith('.tidemark-job.lock'))).toEqual([]);
      // Acknowledged: the job is not run again while the repository stays full.
      await new Promise((res) => setTimeout(res, 1500));
      expect(r.stats().received).toBe(1);
    } finally {
      if (spawnSync('umount', [repo]).status !== 0) spawnSync('umount', ['-l', repo]);
    }
  });

  it('cancels a running job through the hub: cancelled within 5 s, no qemu process or file left', async () => {
    const hub = await startTestHub(world, { TIDEMARK_LOG_LEVEL: 'silent' });
    try {
      const { a, source, target, jobId } = await runnerProcessMidCopy({
        TIDEMARK_RUNNER_ID: 'runner-cancel',
      });
      const exited = new Promise<number | null>((r) => a.once('exit', (code) => r(code)));
      const asked = Date.now();
      const res = await hub.call('POST', `/api/v1/backups/${jobId}/cancel`, {
        reason: 'wrong disk',
      });
      expect(res.status).toBe(202);
      await world.waitForJob(jobId, (j) => j.status === 'cancelled', 5000);
      const running = () => run('ps', ['-eo', 'args']);
      await waitFor(
        'no qemu process of the job',
        async () => !running().includes(source) && !running().includes(target),
        5000 - (Date.now() - asked),
      );
      const tookMs = Date.now() - asked;
      expect(tookMs).toBeLessThan(5000);
      await waitFor('files removed', async () => !existsSync(target), 2000);
      expect(existsSync(`${target}.partial`)).toBe(false);
      expect(await world.job(jobId)).toMatchObject({
        status: 'cancelled',
        error_code: 'CANCELLED',
        error_message: 'wrong disk',
        retryable: 0,
      });
      // The runner said so too, and its CANCELLED failure changed nothing.
      await waitFor(
        'runner reported the cancel',
        async () =>
          (await world.count(
            "SELECT COUNT(*) FROM processed_events WHERE job_id = ? AND event_type = 'backup.failed'",
            [jobId],
          )) === 1,
      );
      expect(await world.deadLetters()).toEqual([]);
      // The runner lives on.
      expect(a.exitCode).toBeNull();
      a.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      await hub.close();
    }
  });

  it('never runs a job cancelled while queued, nor a completed job whose start comes again', async () => {
    const vm = uniqueName('vm');
    const disk = vmWithDisk(vm);
    const cancelledId = uniqueName('job-');
    await startFull(cancelledId, vm, disk);
    await world.waitForJob(cancelledId, (j) => j.status === 'queued');
    await world.publish('backup.cancel', cancelledId, { reason: null });
    await world.waitForJob(cancelledId, (j) => j.status === 'cancelled');

    const r = await runner({ TIDEMARK_RUNNER_CLIENT: fakeClientFile(tmp.dir, 'record') });
    await waitFor('cancelled job taken and dropped', async () => r.stats().cancelled === 1);
    expect(r.stats()).toMatchObject({ received: 1, started: 0 });
    expect(existsSync(join(tmp.dir, `client-env-${cancelledId}.json`))).toBe(false);

    // A completed job's start delivered again (its runner died between the PubAck of the result
    // and the ack of the start) must not overwrite the recorded backup.
    const doneId = uniqueName('job-');
    await startFull(doneId, vm, disk);
    const done = await world.waitForJob(doneId, (j) => j.status === 'completed', 30_000);
    await waitFor('runner idle', async () => r.running() === 0);
    const recorded = readFileSync(disk.target);
    await startFull(doneId, vm, disk);
    await waitFor('second delivery taken', async () => r.stats().received === 3);
    await waitFor('runner idle', async () => r.running() === 0);
    expect(r.stats()).toMatchObject({ started: 1, completed: 1 });
    expect(readFileSync(disk.target).equals(recorded)).toBe(true);
    expect(await world.job(doneId)).toMatchObject({
      status: 'completed',
      change_id: done.change_id,
    });
  });

  it('never runs anew a job the ledger has failed, whose start comes again', async () => {
    // The reaper failed the job (its runner presumed dead) before any runner ran it to the end;
    // its start is then delivered again. Copying now would be a point in time after the job's
    // end, and the job would turn completed beside whatever job of its chain came since.
    const vm = uniqueName('vm');
    const disk = vmWithDisk(vm);
    const jobId = uniqueName('job-');
    await startFull(jobId, vm, disk);
    await world.waitForJob(jobId, (j) => j.status === 'queued');
    await world.publish('backup.failed', jobId, {
      code: 'LEASE_EXPIRED',
      message: 'no word from the job runner (test)',
      retryable: true,
    });
    await world.waitForJob(jobId, (j) => j.status === 'failed');

    const r = await runner({ TIDEMARK_RUNNER_CLIENT: fakeClientFile(tmp.dir, 'record') });
    await waitFor('the start taken', async () => r.stats().received === 1);
    await waitFor('runner idle', async () => r.running() === 0);
    expect(r.stats()).toMatchObject({ received: 1, started: 0, completed: 0 });
    expect(existsSync(join(tmp.dir, `client-env-${jobId}.json`))).toBe(false);
    expect(existsSync(disk.target)).toBe(false);
    expect(await world.job(jobId)).toMatchObject({ status: 'failed', error_code: 'LEASE_EXPIRED' });
    // And the start is acknowledged: not delivered again.
    await new Promise((res) => setTimeout(res, 1500));
    expect(r.stats().received).toBe(1);
  });

  it('discards an attempt whose point in time came after the ledger failed its job', async () => {
    // The race the chaos suite found: a start delivered again is admitted while the job is still
    // open, then the reaper fails it LEASE_EXPIRED before the client takes its point in time. The
    // copy would be a backup point of after the job's end, and its completion would outrank the
    // failure. The slow client is silent 4 s before it copies: the job is failed meanwhile.
    const r = await runner({ TIDEMARK_RUNNER_CLIENT: fakeClientFile(tmp.dir, 'slow') });
    const vm = uniqueName('vm');
    const disk = vmWithDisk(vm);
    const jobId = uniqueName('job-');
    await startFull(jobId, vm, disk);
    await waitFor('the client started', async () => r.stats().started === 1, 30_000);
    await world.publish('backup.failed', jobId, {
      code: 'LEASE_EXPIRED',
      message: 'no word from the job runner (test)',
      retryable: true,
    });
    await world.waitForJob(jobId, (j) => j.status === 'failed');

    await waitFor('runner idle', async () => r.running() === 0, 30_000);
    expect(r.stats()).toMatchObject({ started: 1, completed: 0, failed: 1 });
    expect(await world.job(jobId)).toMatchObject({ status: 'failed', error_code: 'LEASE_EXPIRED' });
    // Nothing of the attempt is left that a later attempt could take for a finished copy, and
    // no completion of it was published.
    expect(existsSync(disk.target)).toBe(false);
    expect(existsSync(manifestPath(disk.target))).toBe(false);
    const events = await world.rows<{ event_type: string }>(
      "SELECT event_type FROM processed_events WHERE job_id = ? AND event_type <> 'backup.progress' ORDER BY event_type",
      [jobId],
    );
    expect(events.map((e) => e.event_type)).toEqual(['backup.failed', 'backup.start']);
    // The source is not held, and its tracking is as before the attempt: no bitmap in use.
    expect(bitmapNames(disk.source).every((b) => !b.flags.includes('in-use'))).toBe(true);
  });

  it('discards such an attempt on a running disk leaving nothing in its daemon', async () => {
    // The same race on a disk served by qemu-storage-daemon: the client is stopped just after its
    // point in time (export, backup job and fleece overlay in the daemon), and must take them all
    // down before it exits.
    const r = await runner({ TIDEMARK_RUNNER_CLIENT: fakeClientFile(tmp.dir, 'slow') });
    const vm = uniqueName('vm');
    const image = join(tmp.dir, `${vm}.qcow2`);
    createImage(image, 64 * MiB);
    writeDisk(image, [{ offset: 0, length: 32 * MiB, pattern: 0x61 }]);
    const daemon = await startStorageDaemon(image, tmp.dir, `d${vm.slice(-8)}`);
    try {
      const target = join(tmp.dir, 'repo', vm, 'job', 'disk-0.qcow2');
      const jobId = uniqueName('job-');
      await startFull(jobId, vm, { source: daemon.source, target });
      await waitFor('the client started', async () => r.stats().started === 1, 30_000);
      await world.publish('backup.failed', jobId, {
        code: 'LEASE_EXPIRED',
        message: 'no word from the job runner (test)',
        retryable: true,
      });
      await world.waitForJob(jobId, (j) => j.status === 'failed');
      await waitFor('runner idle', async () => r.running() === 0, 30_000);
      expect(r.stats()).toMatchObject({ started: 1, completed: 0, failed: 1 });
      expect(existsSync(target)).toBe(false);
      expect(await daemonObjects(daemon)).toEqual({ exports: ['guest'], jobs: [], nodes: [] });
      expect(filesUnder(tmp.dir, /^fleece-.*\.qcow2$/)).toEqual([]);
    } finally {
      await daemon.stop('SIGKILL');
    }
  });

  it('cleans up after a client SIGKILLed mid-copy of a running disk: nothing stays in its daemon', async () => {
    // A client killed outright never runs its teardown: its export, backup job and fleece node
    // would hold the disk's bitmap busy for every later job. The runner runs the client's
    // cleanup for the job, which finds them by the job's name in them.
    const r = await runner();
    const vm = uniqueName('vm');
    const image = join(tmp.dir, `${vm}.qcow2`);
    createImage(image, 96 * MiB);
    writeDisk(image, [{ offset: 0, length: 96 * MiB, pattern: 0x62 }]);
    const daemon = await startStorageDaemon(image, tmp.dir, `d${vm.slice(-8)}`);
    try {
      const target = join(tmp.dir, 'repo', vm, 'job', 'disk-0.qcow2');
      const jobId = uniqueName('job-');
      process.env.TIDEMARK_COPY_MAX_MBPS = '8';
      try {
        await startFull(jobId, vm, { source: daemon.source, target });
        await midCopy(jobId);
      } finally {
        delete process.env.TIDEMARK_COPY_MAX_MBPS;
      }
      const clients = processesMentioning(jobId).filter((p) => p.argv.includes('backup'));
      expect(clients).toHaveLength(1);
      process.kill((clients[0] as { pid: number }).pid, 'SIGKILL');
      await world.waitForJob(jobId, (j) => j.status === 'failed', 30_000);
      await waitFor('runner idle', async () => r.running() === 0, 30_000);
      expect(await world.job(jobId)).toMatchObject({ error_code: 'CLIENT_EXITED' });
      expect(await daemonObjects(daemon)).toEqual({ exports: ['guest'], jobs: [], nodes: [] });
      expect(filesUnder(tmp.dir, /^fleece-.*\.qcow2$/)).toEqual([]);
      // The disk's tracking is free for the next job: a backup of it completes.
      const nextId = uniqueName('job-');
      await startFull(nextId, vm, {
        source: daemon.source,
        target: join(tmp.dir, 'repo', vm, 'next', 'disk-0.qcow2'),
      });
      await world.waitForJob(nextId, (j) => j.status === 'completed', 60_000);
    } finally {
      await daemon.stop('SIGKILL');
    }
  });

  it('refuses a job whose target leaves its repository (a symlink, or a root from the ledger)', async () => {
    // The seeded repository's root (/var/lib/tidemark/repo) is among this runner's roots: the
    // ledger's root is then what the target is held to.
    const r = await runner({
      TIDEMARK_RUNNER_CLIENT: fakeClientFile(tmp.dir, 'record'),
      TIDEMARK_REPOSITORY_ROOTS: `${repoRoot()}:/var/lib/tidemark`,
    });
    const vm = uniqueName('vm');
    const disk = vmWithDisk(vm);
    const outside = join(tmp.dir, `outside-${vm}`);
    mkdirSync(outside);
    mkdirSync(join(repoRoot(), vm), { recursive: true });
    symlinkSync(outside, join(repoRoot(), vm, 'escape'));
    const jobId = uniqueName('job-');
    await world.publish('backup.start', jobId, {
      vmName: vm,
      backupType: 'full',
      repositoryId,
      repositoryPath: repoRoot(),
      disks: [
        {
          diskKey: 'disk-0',
          source: disk.source,
          targetPath: join(repoRoot(), vm, 'escape', 'd.qcow2'),
        },
      ],
    });
    const job = await world.waitForJob(jobId, (j) => j.status === 'failed', 30_000);
    expect(job).toMatchObject({ error_code: 'PATH_OUTSIDE_REPOSITORY', retryable: 0 });
    expect(String(job.error_message)).toContain('disks[0].targetPath');
    expect(readdirSync(outside)).toEqual([]);
    expect(existsSync(join(tmp.dir, `client-env-${jobId}.json`))).toBe(false);

    // Without repositoryPath in the event the runner takes the root from the ledger: the
    // seeded repository is elsewhere, so this suite's target is outside it.
    const second = uniqueName('job-');
    await world.publish('backup.start', second, {
      vmName: uniqueName('vm'),
      backupType: 'full',
      repositoryId,
      disks: [{ diskKey: 'disk-0', source: disk.source, targetPath: disk.target }],
    });
    const refused = await world.waitForJob(second, (j) => j.status === 'failed', 30_000);
    expect(refused).toMatchObject({ error_code: 'PATH_OUTSIDE_REPOSITORY' });
    expect(String(refused.error_message)).toContain('is not under the repository');
    expect(r.stats().started).toBe(0);
  });
});

describe("the runner's own roots: a start naming anything outside them is refused, nothing touched", () => {
  // A job that ran anyway would complete: waiting for either ends at once.
  const ended = (j: Record<string, unknown>) => j.status === 'failed' || j.status === 'completed';

  /** The files a refused job must not have made: its target, the target's directory (a lock). */
  function expectNothingWritten(target: string): void {
    expect(existsSync(target)).toBe(false);
    expect(existsSync(dirname(target))).toBe(false);
  }

  it('refuses a repository root that is /, a sibling sharing the prefix, or a symlink out of the roots', async () => {
    const r = await runner();
    const vm = uniqueName('vm');
    const disk = vmWithDisk(vm);
    const outside = join(tmp.dir, `outside-${vm}`);
    mkdirSync(outside);
    mkdirSync(repoRoot(), { recursive: true });
    symlinkSync(outside, join(repoRoot(), `link-${vm}`));
    const cases = [
      // The event names the whole file system as its repository.
      { root: '/', target: join(outside, vm, 'job', 'disk-0.qcow2') },
      // `<tmp>/repo-evil` starts like `<tmp>/repo` and is not below it.
      { root: `${repoRoot()}-evil`, target: join(`${repoRoot()}-evil`, vm, 'job', 'disk-0.qcow2') },
      // Below the configured root as spelled, outside it once the symlink is followed.
      {
        root: join(repoRoot(), `link-${vm}`),
        target: join(repoRoot(), `link-${vm}`, vm, 'job', 'disk-0.qcow2'),
      },
    ];
    for (const c of cases) {
      const jobId = uniqueName('job-');
      await world.publish('backup.start', jobId, {
        vmName: vm,
        backupType: 'full',
        repositoryId,
        repositoryPath: c.root,
        disks: [{ diskKey: 'disk-0', source: disk.source, targetPath: c.target }],
      });
      const job = await world.waitForJob(jobId, ended, 30_000);
      expect({ root: c.root, code: job.error_code, retryable: job.retryable }).toEqual({
        root: c.root,
        code: 'PATH_OUTSIDE_REPOSITORY',
        retryable: 0,
      });
      expect(String(job.error_message)).toContain(`repositoryPath ${c.root}`);
      expect(String(job.error_message)).toContain(`TIDEMARK_REPOSITORY_ROOTS: ${repoRoot()}`);
      expectNothingWritten(c.target);
    }
    expect(readdirSync(outside)).toEqual([]);
    expect(existsSync(`${repoRoot()}-evil`)).toBe(false);
    expect(r.stats().started).toBe(0);
    // The source was not opened either: no tracking was started on it.
    expect(bitmapNames(disk.source)).toEqual([]);

    // A root the ledger gives (the event names none) is held to the roots as well.
    const fromLedger = uniqueName('job-');
    const target = join('/var/lib/tidemark/repo', vm, fromLedger, 'disk-0.qcow2');
    await world.publish('backup.start', fromLedger, {
      vmName: vm,
      backupType: 'full',
      repositoryId,
      disks: [{ diskKey: 'disk-0', source: disk.source, targetPath: target }],
    });
    const refused = await world.waitForJob(fromLedger, ended, 30_000);
    expect(refused).toMatchObject({ error_code: 'PATH_OUTSIDE_REPOSITORY' });
    expect(String(refused.error_message)).toContain(
      "the ledger's repository root /var/lib/tidemark/repo is not one of the runner's repository roots",
    );
  });

  it("refuses a source outside the source roots (a sibling, a symlink, a live disk's sockets) and never opens it", async () => {
    const vmRoot = join(tmp.dir, 'vm');
    const evilRoot = join(tmp.dir, 'vm-evil');
    const elsewhere = join(tmp.dir, 'vm-elsewhere');
    for (const d of [vmRoot, evilRoot, elsewhere]) mkdirSync(d, { recursive: true });
    const r = await runner({ TIDEMARK_SOURCE_ROOTS: vmRoot });
    const image = (path: string) => {
      createImage(path, 2 * MiB);
      return path;
    };
    // Unix sockets that record every connection: a QMP monitor or NBD server the client
    // would reach first thing.
    const connections: string[] = [];
    const servers: Server[] = [];
    const listening = async (path: string) => {
      const server = createServer((sock) => {
        connections.push(path);
        sock.destroy();
      });
      servers.push(server);
      await new Promise<void>((ok) => server.listen(path, ok));
      return path;
    };
    try {
      symlinkSync(image(join(elsewhere, 'secret.qcow2')), join(vmRoot, 'link.qcow2'));
      const qmpInside = await listening(join(vmRoot, 'qmp.sock'));
      const cases = [
        {
          why: 'is not below',
          source: image(join(evilRoot, 'pg.qcow2')),
          file: join(evilRoot, 'pg.qcow2'),
        },
        {
          why: 'through a symlink',
          source: join(vmRoot, 'link.qcow2'),
          file: join(elsewhere, 'secret.qcow2'),
        },
        {
          why: 'its QMP socket',
          source: `qemu-live:${await listening(join(evilRoot, 'qmp.sock'))}?node=disk0`,
        },
        {
          why: 'its NBD socket',
          source: `qemu-live:${qmpInside}?node=disk0&nbd=${await listening(join(evilRoot, 'nbd.sock'))}`,
        },
      ];
      for (const c of cases) {
        const vm = uniqueName('vm');
        const jobId = uniqueName('job-');
        const target = join(repoRoot(), vm, jobId, 'disk-0.qcow2');
        await world.publish('backup.start', jobId, {
          vmName: vm,
          backupType: 'full',
          repositoryId,
          repositoryPath: repoRoot(),
          disks: [{ diskKey: 'disk-0', source: c.source, targetPath: target }],
        });
        const job = await world.waitForJob(jobId, ended, 30_000);
        expect({ source: c.source, code: job.error_code, retryable: job.retryable }).toEqual({
          source: c.source,
          code: 'SOURCE_NOT_ALLOWED',
          retryable: 0,
        });
        expect(String(job.error_message)).toContain(`disks[0].source ${c.source}`);
        expect(String(job.error_message)).toContain(c.why);
        expect(String(job.error_message)).toContain(`TIDEMARK_SOURCE_ROOTS: ${vmRoot}`);
        expectNothingWritten(target);
        // An image refused is not opened: no tracking started on it.
        if (c.file !== undefined) expect(bitmapNames(c.file)).toEqual([]);
      }
      // No socket was reached, not even the QMP monitor inside the roots of a disk whose NBD
      // socket is outside them.
      expect(connections).toEqual([]);
      expect(r.stats().started).toBe(0);
    } finally {
      await Promise.all(servers.map((s) => new Promise((ok) => s.close(ok))));
    }
  });
});
