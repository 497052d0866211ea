/**
 * End to end: the ledger, the hub and an appliance-runner as their own processes on real NATS
 * and MySQL, real qcow2 disks and qemu tools; driven only through the REST API, the `tidemark`
 * CLI and the backup client's restore/verify commands, as a user would. Each test also checks
 * the ledger's rows for the change_ids.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise';
import {
  CLUSTER,
  MiB,
  completedDisks,
  createImage,
  restoreRaw,
  runClient,
  sameContent,
  startStorageDaemon,
  tempDir,
  writeDisk,
  writeJob,
  type StorageDaemon,
} from '../support/disks';
import { testServers, uniqueName, withDatabase } from '../support/env';
import { Guest } from '../support/guest';
import { startSystem, startedJobId, type ApiJob, type RunningSystem } from '../support/system';

jest.setTimeout(180_000);

const tmp = tempDir('tidemark-e2e-');
const daemons: StorageDaemon[] = [];
let system: RunningSystem;
let db: Connection;
let repositoryId: string;
let busPrefix: string;

beforeAll(async () => {
  const { natsUrl, mysqlUrl } = testServers();
  const database = uniqueName('tidemark_e2e_');
  busPrefix = uniqueName('e2e-');
  system = await startSystem({
    natsUrl,
    mysqlUrl: withDatabase(mysqlUrl, database),
    busPrefix,
    dir: join(tmp.dir, 'services'),
    roots: { repository: [join(tmp.dir, 'repository')], source: [tmp.dir] },
  });
  db = await createConnection(withDatabase(mysqlUrl, database));
  const repo = await system.api<{ id: string }>('POST', '/api/v1/repositories', {
    name: 'e2e',
    path: join(tmp.dir, 'repository'),
  });
  expect(repo.status).toBe(201);
  repositoryId = repo.body.id;
});

afterAll(async () => {
  await system?.stop();
  await db?.end();
  for (const d of daemons) await d.stop('SIGKILL');
  tmp.remove();
});

afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts)
    process.stderr.write(`services' last log lines:\n${system.logTail(30)}\n`);
});

/** A two-disk VM of offline qcow2 images with data and holes, registered through the CLI. */
async function twoDiskVm(): Promise<{ vmName: string; images: Record<string, string> }> {
  const vmName = uniqueName('pg');
  const images = {
    'disk-0': join(tmp.dir, `${vmName}-0.qcow2`),
    'disk-1': join(tmp.dir, `${vmName}-1.qcow2`),
  };
  createImage(images['disk-0'], 64 * MiB);
  writeDisk(images['disk-0'], [
    { offset: 0, length: 4 * MiB, pattern: 0x11 },
    { offset: 40 * MiB, length: 3 * MiB, pattern: 0x12 },
  ]);
  createImage(images['disk-1'], 16 * MiB + 512);
  writeDisk(images['disk-1'], [{ offset: 1 * MiB, length: 6 * MiB, pattern: 0x21 }]);
  const added = await system.cli([
    'vm',
    'add',
    vmName,
    '--disk',
    `disk-0=${images['disk-0']}`,
    '--disk',
    `disk-1=${images['disk-1']}`,
  ]);
  expect(added.code).toBe(0);
  return { vmName, images };
}

/** `tidemark <backup|replicate> start … --follow`: exit 0, the job as the API then shows it. */
async function runFollowed(
  command: 'backup' | 'replicate',
  vmName: string,
  type: 'full' | 'incremental',
): Promise<ApiJob & { id: string; cliOut: string }> {
  const r = await system.cli([
    command,
    'start',
    vmName,
    '--repo',
    repositoryId,
    '--type',
    type,
    '--follow',
  ]);
  expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
  const id = startedJobId(r.stdout);
  const path = command === 'backup' ? `/api/v1/backups/${id}` : `/api/v1/replications/${id}`;
  const res = await system.api<ApiJob>('GET', path);
  expect(res.status).toBe(200);
  return { ...res.body, id, cliOut: r.stdout };
}

/** The ledger's per-disk change_ids of a job, by disk key. */
async function ledgerChangeIds(jobId: string): Promise<Record<string, string | null>> {
  const [rows] = await db.query<RowDataPacket[]>(
    'SELECT disk_key, change_id FROM backup_disks WHERE job_id = ? ORDER BY disk_key',
    [jobId],
  );
  return Object.fromEntries(rows.map((r) => [r.disk_key as string, r.change_id as string | null]));
}

/** Each disk's change_id as the API shows it; also in the CLI's output and the ledger's rows. */
async function expectChangeIdsRecorded(job: ApiJob & { id: string; cliOut?: string }) {
  const fromApi = Object.fromEntries(job.disks.map((d) => [d.disk_key, d.change_id]));
  for (const id of Object.values(fromApi)) {
    expect(id).toMatch(/^[0-9a-f-]{36}\/\d+$/);
    if (job.cliOut) expect(job.cliOut).toContain(id as string);
  }
  expect(await ledgerChangeIds(job.id)).toEqual(fromApi);
  return fromApi;
}

/** Restores each disk's chain from the job's targets, verifies it, compares with the image. */
async function expectRestores(job: ApiJob & { id: string }, images: Record<string, string>) {
  for (const d of job.disks) {
    const top = d.target_path as string;
    const verify = await runClient(['verify', top], {});
    expect({ disk: d.disk_key, verify: verify.code }).toEqual({ disk: d.disk_key, verify: 0 });
    const raw = await restoreRaw(tmp.dir, top, `${job.id}-${d.disk_key}`);
    expect(sameContent(raw, images[d.disk_key] as string)).toMatchObject({ same: true });
  }
}

describe('the whole system, driven through the API and the CLI', () => {
  it('backs up a two-disk VM full then incremental; both points restore and verify', async () => {
    const { vmName, images } = await twoDiskVm();
    const full = await runFollowed('backup', vmName, 'full');
    expect(full).toMatchObject({ status: 'completed', backup_type: 'full' });
    const fullIds = await expectChangeIdsRecorded(full);
    await expectRestores(full, images);

    writeDisk(images['disk-0'], [{ offset: 2 * MiB, length: 2 * CLUSTER, pattern: 0x31 }]);
    writeDisk(images['disk-1'], [{ offset: 15 * MiB, length: CLUSTER, pattern: 0x32 }]);
    const inc = await runFollowed('backup', vmName, 'incremental');
    expect(inc).toMatchObject({ status: 'completed', backup_type: 'incremental' });
    expect(inc.bytes_transferred).toBe(3 * CLUSTER);
    for (const d of inc.disks) {
      expect(d.previous_change_id).toBe(fullIds[d.disk_key]);
      expect(d.backing_path).toBe(full.disks.find((x) => x.disk_key === d.disk_key)?.target_path);
    }
    await expectChangeIdsRecorded(inc);
    await expectRestores(inc, images);
  });

  it('replicates a two-disk VM full then incremental into one replica per disk', async () => {
    const { vmName, images } = await twoDiskVm();
    const full = await runFollowed('replicate', vmName, 'full');
    expect(full).toMatchObject({ job_type: 'replication', status: 'completed' });
    const fullIds = await expectChangeIdsRecorded(full);
    for (const d of full.disks)
      expect(sameContent(d.target_path as string, images[d.disk_key] as string).same).toBe(true);

    writeDisk(images['disk-1'], [{ offset: 0, length: CLUSTER, pattern: 0x41 }]);
    const inc = await runFollowed('replicate', vmName, 'incremental');
    expect(inc.bytes_transferred).toBe(CLUSTER);
    for (const d of inc.disks) {
      expect(d.previous_change_id).toBe(fullIds[d.disk_key]);
      expect(d.target_path).toBe(full.disks.find((x) => x.disk_key === d.disk_key)?.target_path);
      expect(sameContent(d.target_path as string, images[d.disk_key] as string).same).toBe(true);
    }
    await expectChangeIdsRecorded(inc);
  });

  it('backs up a running disk while its guest writes; a quiet incremental then equals the disk', async () => {
    const vmName = uniqueName('live');
    const image = join(tmp.dir, `${vmName}.qcow2`);
    createImage(image, 32 * MiB);
    writeDisk(image, [{ offset: 0, length: 16 * MiB, pattern: 0x51 }]);
    const daemon = await startStorageDaemon(image, tmp.dir, vmName);
    daemons.push(daemon);
    expect(
      (await system.cli(['vm', 'add', vmName, '--disk', `disk-0=${daemon.source}`])).code,
    ).toBe(0);

    const guest = await Guest.attach(daemon);
    guest.start(7);
    const full = await runFollowed('backup', vmName, 'full');
    const during = guest.writes.length;
    await guest.stop();
    expect(full.status).toBe('completed');
    expect(during).toBeGreaterThan(0); // the guest really wrote while the backup ran
    await expectChangeIdsRecorded(full);
    const fullVerify = await runClient(['verify', full.disks[0]?.target_path as string], {});
    expect(fullVerify.code).toBe(0);

    const inc = await runFollowed('backup', vmName, 'incremental');
    await guest.detach();
    await expectChangeIdsRecorded(inc);
    const raw = await restoreRaw(tmp.dir, inc.disks[0]?.target_path as string, `${inc.id}`);
    const guestView = `nbd+unix:///${daemon.exportName}?socket=${daemon.nbdSocket}`;
    expect(sameContent(raw, guestView)).toMatchObject({ same: true });
  });

  it("records an old client's completion through /complete and /changeid, for either job type", async () => {
    // Old clients copy by themselves and report the change_id over REST: no runner here.
    const { natsUrl, mysqlUrl } = testServers();
    const database = uniqueName('tidemark_e2e_old_');
    const old = await startSystem({
      natsUrl,
      mysqlUrl: withDatabase(mysqlUrl, database),
      busPrefix: uniqueName('e2e-old-'),
      dir: join(tmp.dir, 'services-old'),
      roots: { repository: [join(tmp.dir, 'repository-old')], source: [tmp.dir] },
      withoutRunner: true,
    });
    const oldDb = await createConnection(withDatabase(mysqlUrl, database));
    try {
      const repo = await old.api<{ id: string }>('POST', '/api/v1/repositories', {
        name: 'old',
        path: join(tmp.dir, 'repository-old'),
      });
      for (const [jobType, route] of [
        ['backup', 'changeid'],
        ['replication', 'complete'],
      ] as const) {
        const vmName = uniqueName('old');
        const image = join(tmp.dir, `${vmName}.qcow2`);
        createImage(image, 8 * MiB);
        writeDisk(image, [{ offset: 0, length: 1 * MiB, pattern: 0x61 }]);
        await old.api('POST', '/api/v1/vms', {
          vm_name: vmName,
          disks: [{ disk_key: 'disk-0', driver: 'qemu', path: image }],
        });
        const started = await old.api<{
          backup_id?: string;
          job_id?: string;
          disks: Array<{ target_path: string }>;
        }>('POST', jobType === 'backup' ? '/api/v1/backups' : '/api/v1/replications', {
          vm_name: vmName,
          repository_id: repo.body.id,
          backup_type: 'full',
        });
        expect(started.status).toBe(202);
        const jobId = (started.body.backup_id ?? started.body.job_id) as string;
        const target = started.body.disks[0]?.target_path as string;

        // The old client: copies the disk itself, then reports over the compatibility route.
        const jobFile = writeJob(tmp.dir, jobId, {
          jobType,
          backupType: 'full',
          disks: [{ diskKey: 'disk-0', source: image, targetPath: target }],
        });
        const copied = completedDisks(
          await runClient(['backup', '--job', jobFile], { TIDEMARK_JOB_ID: jobId }),
        );
        const changeId = copied[0]?.changeId as string;
        const path =
          route === 'complete'
            ? `/api/v1/backups/${jobId}/complete`
            : `/api/v1/replications/${jobId}/changeid`;
        const reported = await old.api('POST', path, {
          change_id: changeId,
          bytes_transferred: copied[0]?.bytesTransferred,
        });
        expect(reported.status).toBe(202);

        const shown = await old.cli([
          '--json',
          jobType === 'backup' ? 'backup' : 'replicate',
          'show',
          jobId,
        ]);
        const deadline = Date.now() + 10_000;
        let job = JSON.parse(shown.stdout) as ApiJob;
        while (job.status !== 'completed' && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
          job = (await old.api<ApiJob>('GET', `/api/v1/backups/${jobId}`)).body;
        }
        expect(job).toMatchObject({ job_type: jobType, status: 'completed' });
        expect(job.disks[0]?.change_id).toBe(changeId);
        const [rows] = await oldDb.query<RowDataPacket[]>(
          'SELECT change_id FROM backup_disks WHERE job_id = ?',
          [jobId],
        );
        expect(rows.map((r) => r.change_id as string)).toEqual([changeId]);
        expect(existsSync(target)).toBe(true);
      }
    } finally {
      await old.stop();
      await oldDb.end();
    }
  });

  it('runs the demo (small disks): both restores verified, the incremental writes ≤ 10% of the full', async () => {
    const { natsUrl, mysqlUrl } = testServers();
    const summaryFile = join(tmp.dir, 'demo-summary.json');
    const out = await new Promise<{ code: number | null; text: string }>((resolveRun) => {
      const child = spawn(process.execPath, [join(__dirname, '..', 'dist', 'demo', 'run.js')], {
        env: {
          PATH: process.env.PATH,
          TIDEMARK_NATS_URL: natsUrl,
          TIDEMARK_MYSQL_URL: mysqlUrl,
          TIDEMARK_DEMO_SCALE: 'small',
          TIDEMARK_DEMO_SUMMARY: summaryFile,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let text = '';
      child.stdout.on('data', (b: Buffer) => (text += b.toString('utf8')));
      child.stderr.on('data', (b: Buffer) => (text += b.toString('utf8')));
      child.on('close', (code) => resolveRun({ code, text }));
    });
    expect({ code: out.code, tail: out.code === 0 ? '' : out.text.slice(-3000) }).toEqual({
      code: 0,
      tail: '',
    });
    expect(out.text).toMatch(/^JOB +KIND +READ +WRITTEN/m);
    const summary = JSON.parse(readFileSync(summaryFile, 'utf8')) as {
      jobs: Array<{
        kind: string;
        status: string;
        changeIdsRecorded: number;
        disks: number;
        restoredAndVerified: boolean;
      }>;
      incrementalToFull: number;
    };
    expect(summary.jobs.map((j) => j.kind)).toEqual([
      'backup full',
      'backup incremental',
      'replication full',
      'replication incremental',
    ]);
    for (const j of summary.jobs) {
      expect(j).toMatchObject({
        status: 'completed',
        restoredAndVerified: true,
        disks: 2,
        changeIdsRecorded: 2,
      });
    }
    expect(summary.incrementalToFull).toBeLessThanOrEqual(0.1);
    expect(out.text).toContain('everything it started is stopped');
  });

  it('passes hostile disk paths to the tools as plain arguments: no shell ever runs them', async () => {
    const marker = join(tmp.dir, 'injected');
    const vmName = uniqueName('hostile');
    const paths = [
      `${tmp.dir}/a;touch ${marker}-1;.qcow2`,
      `${tmp.dir}/$(touch ${marker}-2).qcow2`,
      `${tmp.dir}/\`touch ${marker}-3\`.qcow2`,
    ];
    const added = await system.api('POST', '/api/v1/vms', {
      vm_name: vmName,
      disks: paths.map((path, i) => ({ disk_key: `disk-${i}`, driver: 'qemu', path })),
    });
    expect(added.status).toBe(201);
    const r = await system.cli(['backup', 'start', vmName, '--repo', repositoryId, '--follow']);
    expect(r.code).toBe(1); // the images do not exist: the job fails, naming the source
    expect(r.stderr).toMatch(/failed: SOURCE_UNAVAILABLE/);
    for (const i of [1, 2, 3]) expect(existsSync(`${marker}-${i}`)).toBe(false);
  });
});
