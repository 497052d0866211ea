/**
 * Every backup point stays usable: a VM's backup chain and its replication each own their own
 * change tracking, so jobs of one never break the other's next incremental. The ledger, the hub
 * and a runner as processes on real NATS and MySQL with real qcow2 disks and qemu tools,
 * driven only through the REST API, as a user would.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import {
  CLUSTER,
  MiB,
  bitmapNames,
  createImage,
  restoreRaw,
  sameContent,
  startStorageDaemon,
  tempDir,
  trackingBitmap,
  writeDisk,
  type StorageDaemon,
} from '../support/disks';
import { connect } from '@nats-io/transport-node';
import { busTopology } from '@tidemark/shared';
import { testServers, uniqueName, waitFor, withDatabase } from '../support/env';
import { Guest } from '../support/guest';
import { startSystem, type ApiJob, type RunningSystem } from '../support/system';

jest.setTimeout(240_000);

const tmp = tempDir('tidemark-chains-');
const daemons: StorageDaemon[] = [];
let system: RunningSystem;
let repositoryId: string;
let busPrefix: string;

type Job = ApiJob & {
  id: string;
  disks: Array<ApiJob['disks'][number] & { full_reason: string | null }>;
};
type Kind = 'backup' | 'replication';

beforeAll(async () => {
  const { natsUrl, mysqlUrl } = testServers();
  busPrefix = uniqueName('chains-');
  system = await startSystem({
    natsUrl,
    mysqlUrl: withDatabase(mysqlUrl, uniqueName('tidemark_chains_')),
    busPrefix,
    dir: join(tmp.dir, 'services'),
    roots: { repository: [join(tmp.dir, 'repository')], source: [tmp.dir] },
    // Slow enough that a copy can be cancelled while it runs (per disk, MB = 10^6 bytes).
    serviceEnv: { 'appliance-runner': { TIDEMARK_COPY_MAX_MBPS: '25' } },
  });
  const repo = await system.api<{ id: string }>('POST', '/api/v1/repositories', {
    name: 'chains',
    path: join(tmp.dir, 'repository'),
  });
  expect(repo.status).toBe(201);
  repositoryId = repo.body.id;
});

afterAll(async () => {
  await system?.stop();
  for (const d of daemons) await d.stop('SIGKILL');
  tmp.remove();
});

afterEach(() => {
  const state = expect.getState();
  if (state.assertionCalls !== state.numPassingAsserts)
    process.stderr.write(`services' last log lines:\n${system.logTail(40)}\n`);
});

const route = (kind: Kind) => (kind === 'backup' ? '/api/v1/backups' : '/api/v1/replications');

async function start(kind: Kind, vmName: string, type: string): Promise<string> {
  const r = await system.api<{ backup_id?: string; job_id?: string }>('POST', route(kind), {
    vm_name: vmName,
    repository_id: repositoryId,
    backup_type: type,
  });
  expect({ status: r.status, body: r.status === 202 ? null : r.body }).toEqual({
    status: 202,
    body: null,
  });
  return (r.body.backup_id ?? r.body.job_id) as string;
}

async function show(kind: Kind, id: string): Promise<Job> {
  const r = await system.api<Job>('GET', `${route(kind)}/${id}`);
  expect(r.status).toBe(200);
  return { ...r.body, id };
}

async function ended(kind: Kind, id: string): Promise<Job> {
  let job = await show(kind, id);
  await waitFor(
    `${kind} ${id} ended`,
    async () => {
      job = await show(kind, id);
      return !['queued', 'running'].includes(job.status);
    },
    120_000,
  );
  return job;
}

/** Runs a job to its end through the API; it must complete. */
async function run(kind: Kind, vmName: string, type: string): Promise<Job> {
  const job = await ended(kind, await start(kind, vmName, type));
  expect({ status: job.status, error: job.error_message }).toEqual({
    status: 'completed',
    error: null,
  });
  return job;
}

/** The disks as they are now: a plain raw copy of each, to compare a point with later. */
function snapshotOf(images: Record<string, string>, tag: string): Record<string, string> {
  return Object.fromEntries(
    Object.entries(images).map(([key, image]) => {
      const raw = join(tmp.dir, `${tag}-${key}.raw`);
      execFileSync('qemu-img', ['convert', '-U', '-O', 'raw', image, raw]);
      return [key, raw];
    }),
  );
}

/** Every disk of a backup point restores to `expected`; every replica equals it. */
async function expectPoint(job: Job, expected: Record<string, string>): Promise<void> {
  for (const d of job.disks) {
    const file =
      job.job_type === 'backup'
        ? await restoreRaw(tmp.dir, d.target_path as string, `${job.id}-${d.disk_key}`)
        : (d.target_path as string);
    expect({
      disk: d.disk_key,
      ...sameContent(file, expected[d.disk_key] as string),
    }).toMatchObject({ disk: d.disk_key, same: true });
  }
}

/**
 * A disk's bitmaps (sorted) once they are `expected`, or as they are after 10 s: a job's client
 * forgets its chain's old tracking only after the ledger recorded the completion, so a moment
 * after the API shows the job completed.
 */
async function bitmapsOnceSettled(image: string, expected: string[]): Promise<string[]> {
  const want = JSON.stringify([...expected].sort());
  let names: string[] = [];
  await waitFor(
    'the old tracking removed',
    async () => {
      names = bitmapNames(image)
        .map((b) => b.name)
        .sort();
      return JSON.stringify(names) === want;
    },
    10_000,
  ).catch(() => undefined);
  return names;
}

function twoDiskImages(vmName: string): Record<string, string> {
  const images = {
    'disk-0': join(tmp.dir, `${vmName}-0.qcow2`),
    'disk-1': join(tmp.dir, `${vmName}-1.qcow2`),
  };
  createImage(images['disk-0'], 64 * MiB);
  writeDisk(images['disk-0'], [{ offset: 0, length: 4 * MiB, pattern: 0x11 }]);
  createImage(images['disk-1'], 32 * MiB);
  writeDisk(images['disk-1'], [{ offset: 1 * MiB, length: 3 * MiB, pattern: 0x21 }]);
  return images;
}

async function register(vmName: string, disks: Record<string, string>): Promise<void> {
  const r = await system.api('POST', '/api/v1/vms', {
    vm_name: vmName,
    disks: Object.entries(disks).map(([disk_key, path]) => ({ disk_key, driver: 'qemu', path })),
  });
  expect(r.status).toBe(201);
}

const bytesOf = (job: Job) =>
  Object.fromEntries(job.disks.map((d) => [d.disk_key, d.bytes_transferred]));

describe('a backup chain and a replication of one VM, side by side', () => {
  it('interleaved, with a cancelled replication: every incremental stays incremental and every point is the source', async () => {
    const vmName = uniqueName('both');
    const images = twoDiskImages(vmName);
    await register(vmName, images);

    const backupFull = await run('backup', vmName, 'full');
    await expectPoint(backupFull, snapshotOf(images, 'p0'));
    const replicaFull = await run('replication', vmName, 'full');
    await expectPoint(replicaFull, snapshotOf(images, 'p0r'));

    // W1 on both disks; only the backup runs after it.
    writeDisk(images['disk-0'], [{ offset: 8 * MiB, length: 2 * CLUSTER, pattern: 0x31 }]);
    writeDisk(images['disk-1'], [{ offset: 8 * MiB, length: CLUSTER, pattern: 0x32 }]);
    const b1 = await run('backup', vmName, 'incremental');
    expect(b1.backup_type).toBe('incremental');
    expect(bytesOf(b1)).toEqual({ 'disk-0': 2 * CLUSTER, 'disk-1': CLUSTER });
    await expectPoint(b1, snapshotOf(images, 'p1'));

    // W2: the replication copies W1 and W2 — its own tracking saw both.
    writeDisk(images['disk-0'], [{ offset: 12 * MiB, length: CLUSTER, pattern: 0x33 }]);
    const r1 = await run('replication', vmName, 'incremental');
    expect(r1.backup_type).toBe('incremental');
    expect(bytesOf(r1)).toEqual({ 'disk-0': 3 * CLUSTER, 'disk-1': CLUSTER });
    await expectPoint(r1, snapshotOf(images, 'p2'));

    // W3: the backup copies W2 and W3 — never what its previous incremental already holds.
    writeDisk(images['disk-1'], [{ offset: 16 * MiB, length: 3 * CLUSTER, pattern: 0x34 }]);
    const b2 = await run('backup', vmName, 'incremental');
    expect(bytesOf(b2)).toEqual({ 'disk-0': CLUSTER, 'disk-1': 3 * CLUSTER });
    await expectPoint(b2, snapshotOf(images, 'p3'));

    // W4, large enough to cancel its replication mid-copy (25 MB/s per disk).
    writeDisk(images['disk-0'], [{ offset: 20 * MiB, length: 24 * MiB, pattern: 0x35 }]);
    const cancelledId = await start('replication', vmName, 'incremental');
    await waitFor(
      'the replication copying',
      async () => (await show('replication', cancelledId)).status === 'running',
      30_000,
    );
    const cancel = await system.api('POST', `/api/v1/replications/${cancelledId}/cancel`, {
      reason: 'chains test',
    });
    expect(cancel.status).toBe(202);
    expect((await ended('replication', cancelledId)).status).toBe('cancelled');

    // The backup chain does not care: W4 only.
    const b3 = await run('backup', vmName, 'incremental');
    expect(bytesOf(b3)).toEqual({ 'disk-0': 24 * MiB, 'disk-1': 0 });
    const p4 = snapshotOf(images, 'p4');
    await expectPoint(b3, p4);
    // Nor does the replication: its next incremental still starts from its own last point
    // (W3 and W4, and nothing of the cancelled attempt is lost).
    const r2 = await run('replication', vmName, 'incremental');
    expect(r2.backup_type).toBe('incremental');
    expect(bytesOf(r2)).toEqual({ 'disk-0': 24 * MiB, 'disk-1': 3 * CLUSTER });
    await expectPoint(r2, p4);
    // Each chain keeps exactly one bitmap per disk: its head's.
    for (const [key, image] of Object.entries(images)) {
      const b3Id = b3.disks.find((d) => d.disk_key === key)?.change_id as string;
      const r2Id = r2.disks.find((d) => d.disk_key === key)?.change_id as string;
      const heads = [
        trackingBitmap(b3Id, 'backup', repositoryId),
        trackingBitmap(r2Id, 'replication', repositoryId),
      ].sort();
      expect(await bitmapsOnceSettled(image, heads)).toEqual(heads);
    }
  });

  it('the same on a running disk while its guest writes', async () => {
    const vmName = uniqueName('live');
    const image = join(tmp.dir, `${vmName}.qcow2`);
    createImage(image, 32 * MiB);
    writeDisk(image, [{ offset: 0, length: 8 * MiB, pattern: 0x51 }]);
    const daemon = await startStorageDaemon(image, tmp.dir, vmName);
    daemons.push(daemon);
    await register(vmName, { 'disk-0': daemon.source });
    const guestView = `nbd+unix:///${daemon.exportName}?socket=${daemon.nbdSocket}`;

    const guest = await Guest.attach(daemon);
    guest.start(11);
    await run('backup', vmName, 'full');
    await run('replication', vmName, 'full');
    await run('backup', vmName, 'incremental');
    const during = guest.writes.length;
    await guest.stop();
    expect(during).toBeGreaterThan(0);
    // Quiet now: each chain's next incremental brings its point to the disk as the guest sees it.
    const b = await run('backup', vmName, 'incremental');
    const r = await run('replication', vmName, 'incremental');
    await guest.detach();
    expect([b.backup_type, r.backup_type]).toEqual(['incremental', 'incremental']);
    expect(
      sameContent(await restoreRaw(tmp.dir, b.disks[0]?.target_path as string, b.id), guestView),
    ).toMatchObject({ same: true });
    expect(sameContent(r.disks[0]?.target_path as string, guestView)).toMatchObject({ same: true });
  });
});

describe('a disk whose change tracking is gone', () => {
  it('fails an explicit incremental naming the disk; auto copies that disk alone in full, saying why', async () => {
    const vmName = uniqueName('lost');
    const images = twoDiskImages(vmName);
    await register(vmName, images);
    const full = await run('backup', vmName, 'full');
    // Someone removes disk-1's tracking by hand.
    const lostId = full.disks.find((d) => d.disk_key === 'disk-1')?.change_id as string;
    execFileSync('qemu-img', [
      'bitmap',
      '--remove',
      images['disk-1'],
      trackingBitmap(lostId, 'backup', repositoryId),
    ]);
    writeDisk(images['disk-0'], [{ offset: 8 * MiB, length: CLUSTER, pattern: 0x61 }]);

    const explicit = await ended('backup', await start('backup', vmName, 'incremental'));
    expect(explicit).toMatchObject({ status: 'failed', error_code: 'FULL_BACKUP_REQUIRED' });
    expect(explicit.error_message).toMatch(/disk disk-1/);

    const auto = await run('backup', vmName, 'auto');
    expect(auto.backup_type).toBe('incremental');
    const [d0, d1] = auto.disks;
    expect(d0).toMatchObject({ disk_key: 'disk-0', full_reason: null, bytes_transferred: CLUSTER });
    expect(d0?.backing_path).toBe(full.disks[0]?.target_path);
    expect(d1).toMatchObject({
      disk_key: 'disk-1',
      backing_path: null,
      bytes_transferred: 3 * MiB,
    });
    expect(d1?.full_reason).toMatch(/bitmap .* on the source/);
    await expectPoint(auto, snapshotOf(images, 'lost'));

    // And the chain goes on incrementally on both disks. A bitmap of before chains that no
    // chain's head names (left by an older version) is cleaned up on the way.
    const stray = `tidemark.${(d0?.change_id as string).split('/')[0]}.1`;
    execFileSync('qemu-img', ['bitmap', '--add', images['disk-0'], stray]);
    writeDisk(images['disk-1'], [{ offset: 20 * MiB, length: CLUSTER, pattern: 0x62 }]);
    const next = await run('backup', vmName, 'auto');
    const head = [trackingBitmap(next.disks[0]?.change_id as string, 'backup', repositoryId)];
    expect(await bitmapsOnceSettled(images['disk-0'], head)).toEqual(head);
    expect(bytesOf(next)).toEqual({ 'disk-0': 0, 'disk-1': CLUSTER });
    expect(next.disks.map((d) => d.full_reason)).toEqual([null, null]);
    await expectPoint(next, snapshotOf(images, 'lost2'));
  });

  it('copies a disk added to the VM in full in the next auto job, the others incrementally', async () => {
    const vmName = uniqueName('grow');
    const images = twoDiskImages(vmName);
    await register(vmName, { 'disk-0': images['disk-0'] });
    await run('backup', vmName, 'full');
    await run('replication', vmName, 'full');
    const updated = await system.api<{ disks: Array<{ disk_key: string }> }>(
      'PUT',
      `/api/v1/vms/${vmName}`,
      {
        disks: Object.entries(images).map(([disk_key, path]) => ({
          disk_key,
          driver: 'qemu',
          path,
        })),
      },
    );
    expect(updated.status).toBe(200);
    expect(updated.body.disks.map((d) => d.disk_key)).toEqual(['disk-0', 'disk-1']);
    writeDisk(images['disk-0'], [{ offset: 8 * MiB, length: CLUSTER, pattern: 0x71 }]);
    const expected = snapshotOf(images, 'grow');
    for (const kind of ['backup', 'replication'] as const) {
      const job = await run(kind, vmName, 'auto');
      expect(job.backup_type).toBe('incremental');
      expect(bytesOf(job)).toEqual({ 'disk-0': CLUSTER, 'disk-1': 3 * MiB });
      expect(job.disks.map((d) => d.full_reason === null)).toEqual([true, false]);
      expect(job.disks[1]?.full_reason).toMatch(/recorded no change_id for disk disk-1/);
      await expectPoint(job, expected);
    }
    const unknown = await system.api('PUT', `/api/v1/vms/${uniqueName('nobody')}`, {
      disks: [{ disk_key: 'disk-0', driver: 'qemu', path: images['disk-0'] }],
    });
    expect(unknown.status).toBe(404);
  });

  it('marks a disk whose tracking missed writes untrusted (the CBT canary), alerts, and copies it in full next', async () => {
    const vmName = uniqueName('canary');
    const images = twoDiskImages(vmName);
    await register(vmName, images);
    const full = await run('backup', vmName, 'full');
    // Half of disk-1 is written behind its tracking's back.
    const bitmap = trackingBitmap(
      full.disks.find((d) => d.disk_key === 'disk-1')?.change_id as string,
      'backup',
      repositoryId,
    );
    execFileSync('qemu-img', ['bitmap', '--disable', images['disk-1'], bitmap]);
    writeDisk(images['disk-1'], [{ offset: 0, length: 16 * MiB, pattern: 0x7e }]);
    execFileSync('qemu-img', ['bitmap', '--enable', images['disk-1'], bitmap]);

    const nc = await connect({ servers: testServers().natsUrl });
    const alerts = nc.subscribe(busTopology(busPrefix).subjectFor('backup.alert'));
    try {
      const inc = await run('backup', vmName, 'auto');
      expect(inc.backup_type).toBe('incremental');
      const [d0, d1] = inc.disks;
      expect(d0).toMatchObject({ change_tracking: 'trusted', canary: { mismatched_bytes: 0 } });
      expect(d0?.canary?.sampled_bytes).toBe(64 * 64 * 1024);
      expect(d1?.change_tracking).toBe('untrusted');
      expect(d1?.canary?.mismatched_bytes).toBeGreaterThan(0);
      // The job still completed: the blocks it copied are real.
      for await (const m of alerts) {
        const alert = m.json<{ jobId: string; data: { kind: string; diskKey: string } }>();
        expect(alert).toMatchObject({
          jobId: inc.id,
          data: { kind: 'CHANGE_TRACKING_UNTRUSTED', diskKey: 'disk-1' },
        });
        break;
      }
    } finally {
      alerts.unsubscribe();
      await nc.close();
    }
    const next = await run('backup', vmName, 'auto');
    expect(next.disks[0]).toMatchObject({ full_reason: null, bytes_transferred: 0 });
    expect(next.disks[1]?.full_reason).toMatch(/CBT canary .* not trusted/);
    expect(next.disks[1]?.backing_path).toBeNull();
    await expectPoint(next, snapshotOf(images, 'canary'));
  });
});
