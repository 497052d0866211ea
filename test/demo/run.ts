/**
 * `npm run demo`: the whole system on this machine, end to end, in about a minute.
 *
 * Starts the ledger, the hub and an appliance-runner on the NATS and MySQL servers named by
 * TIDEMARK_NATS_URL / TIDEMARK_MYSQL_URL (default: the local ones; the demo uses its own
 * database `tidemark_demo`, recreated each run, and its own bus prefix). Creates the lab VM
 * `pgtest1`: two qcow2 disks (one large and sparse, one small) served by qemu-storage-daemon,
 * and a "guest" that writes to them over NBD. Then, through the `tidemark` CLI: a full backup
 * (with its progress bar), ~1% changed by the guest, an incremental; both points restored and
 * verified; a full and an incremental replication, the replica compared with the disks. Prints
 * a summary per job and stops everything it started.
 *
 * TIDEMARK_DEMO_SCALE=small shrinks the disks (the e2e suite runs it so); TIDEMARK_DEMO_SUMMARY
 * names a file to write the summary to as JSON; TIDEMARK_DEMO_KEEP=1 keeps the work directory.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { readManifest } from '@tidemark/backup-client/protocol';
import { formatBytes, formatTable } from '@tidemark/cli/format';
import { busTopology, redactUrl } from '@tidemark/shared';
import { createConnection } from 'mysql2/promise';
import {
  CLUSTER,
  GiB,
  MiB,
  createImage,
  restoreRaw,
  rng,
  run,
  runClient,
  sameContent,
  startStorageDaemon,
  type StorageDaemon,
} from '../support/disks';
import { startSystem, startedJobId, type ApiJob, type RunningSystem } from '../support/system';

interface DiskSpec {
  key: string;
  size: number;
  /** Data written before the first backup: [offset, length] extents. */
  extents: Array<[number, number]>;
}

/** The lab VM's disks: disk-0 large and sparse (data scattered), disk-1 small and full. */
function labDisks(scale: string): DiskSpec[] {
  const small = scale === 'small';
  const bigSize = small ? 2 * GiB : 16 * GiB;
  const pieces = small ? 8 : 48;
  const piece = small ? 4 * MiB : 8 * MiB;
  const stride = Math.floor(bigSize / pieces / CLUSTER) * CLUSTER;
  const smallSize = small ? 32 * MiB : 256 * MiB;
  return [
    {
      key: 'disk-0',
      size: bigSize,
      extents: Array.from({ length: pieces }, (_, i) => [i * stride, piece] as [number, number]),
    },
    { key: 'disk-1', size: smallSize, extents: [[0, Math.floor(smallSize * 0.75)]] },
  ];
}

interface LabDisk extends DiskSpec {
  image: string;
  daemon: StorageDaemon;
  /** What the guest writes through: the daemon's NBD export. */
  nbdUri: string;
}

/** The guest: writes `pattern`-filled clusters through the running disk's NBD export. */
function guestWrite(disk: LabDisk, writes: Array<[number, number]>, pattern: number): void {
  const cmds = writes.flatMap(([offset, length]) => [
    '-c',
    `write -P ${pattern} ${offset} ${length}`,
  ]);
  for (let i = 0; i < cmds.length; i += 400)
    run('qemu-io', ['-f', 'raw', ...cmds.slice(i, i + 400), disk.nbdUri]);
}

/** About `fraction` of each disk's data, as random whole clusters inside its data. */
function guestChanges(disks: LabDisk[], fraction: number, seed: number, pattern: number): number {
  const random = rng(seed);
  let changed = 0;
  for (const disk of disks) {
    const clusters = disk.extents.flatMap(([offset, length]) =>
      Array.from({ length: length / CLUSTER }, (_, i) => offset + i * CLUSTER),
    );
    const count = Math.max(1, Math.round(clusters.length * fraction));
    const picked = new Set<number>();
    while (picked.size < count) picked.add(clusters[Math.floor(random() * clusters.length)]);
    guestWrite(
      disk,
      [...picked].map((o) => [o, CLUSTER] as [number, number]),
      pattern,
    );
    changed += count * CLUSTER;
  }
  return changed;
}

interface JobSummary {
  jobId: string;
  kind: string;
  status: string;
  bytesRead: number;
  bytesWritten: number;
  bytesOnDisk: number | null;
  provisioned: number;
  dataReduction: number;
  changeIdsRecorded: number;
  disks: number;
  seconds: number;
  restoredAndVerified: boolean | null;
}

/** Bytes a job wrote into its targets, from each target's manifest (data and zeroed ranges). */
async function manifestWritten(targets: string[]): Promise<number> {
  let sum = 0;
  for (const t of targets) {
    const m = await readManifest(t);
    sum += m.dataBytes + m.zeroBytes;
  }
  return sum;
}

const step = (text: string) => process.stdout.write(`\n==> ${text}\n`);

async function main(): Promise<void> {
  const scale = process.env.TIDEMARK_DEMO_SCALE ?? 'standard';
  if (!['standard', 'small'].includes(scale))
    throw new Error(`TIDEMARK_DEMO_SCALE must be "standard" or "small", not "${scale}"`);
  const natsUrl = process.env.TIDEMARK_NATS_URL ?? 'nats://127.0.0.1:4222';
  const server = new URL(process.env.TIDEMARK_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/');
  const mysqlUrl = new URL(server);
  mysqlUrl.pathname = '/tidemark_demo';
  const busPrefix = `demo-${randomBytes(3).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'tidemark-demo-'));
  const t0 = Date.now();

  step(
    `Tidemark demo: NATS ${redactUrl(natsUrl)}, MySQL ${redactUrl(mysqlUrl.toString())}, work directory ${dir}`,
  );
  const admin = await createConnection({ uri: server.toString(), connectTimeout: 5000 }).catch(
    (err: unknown) => {
      throw new Error(
        `cannot reach MySQL at ${redactUrl(server.toString())} (${String(err)}); set TIDEMARK_MYSQL_URL`,
      );
    },
  );
  await admin.query('DROP DATABASE IF EXISTS tidemark_demo');
  await admin.end();
  const nc = await connect({ servers: natsUrl, timeout: 5000 }).catch((err: unknown) => {
    throw new Error(
      `cannot reach NATS at ${redactUrl(natsUrl)} (${String(err)}); set TIDEMARK_NATS_URL`,
    );
  });

  const disks: LabDisk[] = [];
  let system: RunningSystem | undefined;
  let ok = false;
  try {
    step('Creating the lab VM pgtest1: two disks served by qemu-storage-daemon, and its guest');
    for (const spec of labDisks(scale)) {
      const image = join(dir, `pgtest1-${spec.key}.qcow2`);
      createImage(image, spec.size);
      const daemon = await startStorageDaemon(image, dir, `pgtest1-${spec.key}`);
      const disk = {
        ...spec,
        image,
        daemon,
        nbdUri: `nbd+unix:///${daemon.exportName}?socket=${daemon.nbdSocket}`,
      };
      guestWrite(disk, spec.extents, 0x21);
      disks.push(disk);
      const data = spec.extents.reduce((s, [, l]) => s + l, 0);
      console.log(
        `  ${spec.key}: ${formatBytes(spec.size)} provisioned, ${formatBytes(data)} of data`,
      );
    }
    const provisioned = disks.reduce((s, d) => s + d.size, 0);

    step('Starting the ledger, the hub and an appliance-runner');
    system = await startSystem({
      natsUrl,
      mysqlUrl: mysqlUrl.toString(),
      busPrefix,
      dir: join(dir, 'services'),
      // The runner writes only into the demo's repository and reads only its disks.
      roots: { repository: [join(dir, 'repository')], source: [dir] },
    });
    const sys = system;
    console.log(`  hub at ${sys.hubUrl}; logs in ${join(dir, 'services')}`);

    const cli = async (args: string[], echo = true) => {
      if (echo) console.log(`$ tidemark ${args.join(' ')}`);
      const r = await sys.cli(args, { echo });
      if (r.code !== 0) throw new Error(`tidemark ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
      return r;
    };
    step('Registering pgtest1 and a repository');
    await cli([
      'vm',
      'add',
      'pgtest1',
      ...disks.flatMap((d) => ['--disk', `${d.key}=${d.daemon.source}`]),
    ]);
    const repoDir = join(dir, 'repository');
    mkdirSync(repoDir);
    const repo = JSON.parse(
      (await cli(['--json', 'repo', 'add', 'demo', repoDir], false)).stdout,
    ) as { id: string };
    console.log(`  repository ${repo.id} at ${repoDir}`);

    const summaries: JobSummary[] = [];
    const runJob = async (
      command: 'backup' | 'replicate',
      type: string,
    ): Promise<ApiJob & { id: string }> => {
      step(`${command === 'backup' ? 'Backup' : 'Replication'}, ${type}`);
      const r = await cli([
        command,
        'start',
        'pgtest1',
        '--repo',
        repo.id,
        '--type',
        type,
        '--follow',
      ]);
      const id = startedJobId(r.stdout);
      const path = command === 'backup' ? `/api/v1/backups/${id}` : `/api/v1/replications/${id}`;
      const job = (await sys.api<ApiJob>('GET', path)).body;
      return { ...job, id };
    };
    const summarize = async (
      job: ApiJob & { id: string },
      verified: boolean | null,
    ): Promise<JobSummary> => {
      const targets = job.disks.map((d) => d.target_path as string);
      const written = await manifestWritten(targets);
      const seconds =
        (Date.parse(job.completed_at ?? '') - Date.parse(job.started_at ?? '')) / 1000;
      const s: JobSummary = {
        jobId: job.id,
        kind: `${job.job_type} ${job.backup_type}`,
        status: job.status,
        bytesRead: job.bytes_transferred ?? 0,
        bytesWritten: written,
        bytesOnDisk:
          job.job_type === 'backup'
            ? targets.reduce((sum, t) => sum + statSync(t).blocks * 512, 0)
            : null,
        provisioned,
        dataReduction: 1 - written / provisioned,
        changeIdsRecorded: job.disks.filter((d) => d.change_id !== null).length,
        disks: job.disks.length,
        seconds,
        restoredAndVerified: verified,
      };
      summaries.push(s);
      return s;
    };

    /** Restores the chain of `job`'s targets and checks it against the running disks. */
    const restoreAndCheck = async (
      job: ApiJob & { id: string },
      label: string,
    ): Promise<string[]> => {
      const restored: string[] = [];
      for (const d of job.disks) {
        const disk = disks.find((x) => x.key === d.disk_key) as LabDisk;
        const top = d.target_path as string;
        const verify = await runClient(['verify', top], {});
        if (verify.code !== 0) throw new Error(`verify ${top} failed: ${verify.stderr}`);
        const raw = await restoreRaw(dir, top, `${label}-${d.disk_key}`);
        const cmp = sameContent(raw, disk.nbdUri);
        if (!cmp.same) throw new Error(`${label} ${d.disk_key}: restore differs: ${cmp.output}`);
        console.log(
          `  ${d.disk_key}: chain verified, restored = disk as it was (${formatBytes(disk.size)})`,
        );
        restored.push(raw);
      }
      return restored;
    };

    const full = await runJob('backup', 'full');
    step('Restoring and verifying the full backup');
    const fullRestores = await restoreAndCheck(full, 'full');
    await summarize(full, true);

    step('The guest changes about 1% of its data');
    const changed = guestChanges(disks, 0.01, 1, 0x42);
    console.log(`  ${formatBytes(changed)} rewritten in 64 KiB clusters`);

    const inc = await runJob('backup', 'incremental');
    step('Restoring and verifying the incremental, and the full again');
    await restoreAndCheck(inc, 'incremental');
    for (const [i, d] of full.disks.entries()) {
      const again = await restoreRaw(dir, d.target_path as string, `full-again-${d.disk_key}`);
      if (!sameContent(again, fullRestores[i]).same)
        throw new Error(`the full backup of ${d.disk_key} no longer restores as it did`);
    }
    console.log('  the full still restores to the first point');
    await summarize(inc, true);
    for (const r of fullRestores) rmSync(r, { force: true });

    const replicaCheck = (job: ApiJob & { id: string }) => {
      for (const d of job.disks) {
        const disk = disks.find((x) => x.key === d.disk_key) as LabDisk;
        const cmp = sameContent(d.target_path as string, disk.nbdUri);
        if (!cmp.same) throw new Error(`replica of ${d.disk_key} differs: ${cmp.output}`);
      }
      console.log('  each replica equals its disk');
      return true;
    };
    const replFull = await runJob('replicate', 'full');
    await summarize(replFull, replicaCheck(replFull));
    step('The guest changes about 1% again');
    guestChanges(disks, 0.01, 2, 0x43);
    const replInc = await runJob('replicate', 'incremental');
    await summarize(replInc, replicaCheck(replInc));

    step('Summary');
    const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
    console.log(
      formatTable(
        [
          'JOB',
          'KIND',
          'READ',
          'WRITTEN',
          'ON DISK',
          'DATA REDUCTION',
          'CHANGE_IDS',
          'TIME',
          'RESTORED+VERIFIED',
        ],
        summaries.map((s) => [
          s.jobId,
          s.kind,
          formatBytes(s.bytesRead),
          formatBytes(s.bytesWritten),
          s.bytesOnDisk === null ? 'replica' : formatBytes(s.bytesOnDisk),
          pct(s.dataReduction),
          `${s.changeIdsRecorded}/${s.disks}`,
          `${s.seconds.toFixed(1)} s`,
          s.restoredAndVerified ? 'yes' : 'no',
        ]),
      ),
    );
    const ratio = summaries[1].bytesWritten / summaries[0].bytesWritten;
    console.log(
      `\nThe incremental wrote ${pct(ratio)} of what the full wrote, for ${formatBytes(changed)} (~1%) changed; ` +
        `provisioned ${formatBytes(provisioned)}. Whole demo: ${((Date.now() - t0) / 1000).toFixed(0)} s.`,
    );
    if (process.env.TIDEMARK_DEMO_SUMMARY)
      writeFileSync(
        process.env.TIDEMARK_DEMO_SUMMARY,
        JSON.stringify(
          { jobs: summaries, incrementalToFull: ratio, changedBytes: changed },
          null,
          2,
        ),
      );
    ok = true;
  } finally {
    if (!ok && system)
      process.stderr.write(`\nLast log lines of the services:\n${system.logTail(15)}\n`);
    await system?.stop();
    for (const d of disks) await d.daemon.stop();
    const jsm = await jetstreamManager(nc);
    const topo = busTopology(busPrefix);
    for (const stream of [topo.stream, topo.deadStream])
      await jsm.streams.delete(stream).catch(() => undefined);
    await nc.close();
    if (process.env.TIDEMARK_DEMO_KEEP === '1' || !ok) console.log(`\nWork directory kept: ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
    console.log(
      ok ? '\nDemo finished; everything it started is stopped.' : '\nDemo FAILED (see above).',
    );
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`\ndemo: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
