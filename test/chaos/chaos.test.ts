/**
 * Chaos: 50 jobs over two runners while a seeded random schedule SIGKILLs and restarts the
 * ledger, a runner and the hub, and restarts the NATS and MySQL containers. Afterwards every job
 * must have ended (completed, or failed with a reason), every completed job must hold each
 * disk's change_id exactly once, every completed chain must restore to its source as it was,
 * and no event may be in the stream that the ledger neither applied nor dead-lettered.
 * Three rounds, three seeds; TIDEMARK_CHAOS_SEED replays a round (seed and schedule printed).
 */
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { busTopology } from '@tidemark/shared';
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise';
import type { StartedTestContainer } from 'testcontainers';
import {
  MYSQL_OFFICIAL,
  MYSQL_STANDIN,
  NATS_OFFICIAL,
  NATS_STANDIN,
  LABELS,
  startNats,
  startWithFallback,
} from '../support/containers';
import { MiB, createImage, restoreRaw, rng, run, tempDir, writeDisk } from '../support/disks';
import { freePort, waitFor } from '../support/env';
import { startSystem, type ApiJob } from '../support/system';

jest.setTimeout(30 * 60_000);

const ROUNDS = Number(process.env.TIDEMARK_CHAOS_ROUNDS ?? 3);
const JOBS = 50;
const VMS = 10;
const baseSeed = Number(process.env.TIDEMARK_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));

let nats: StartedTestContainer;
let mysql: StartedTestContainer;
let natsUrl: string;
let mysqlServerUrl: string;

const say = (line: string) => process.stdout.write(`[chaos] ${line}\n`);

beforeAll(async () => {
  process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
  const tc = await import('testcontainers');
  // Fixed host ports: a restarted container keeps its address.
  const natsPort = await freePort();
  ({ c: nats } = await startWithFallback(
    'TIDEMARK_TEST_NATS_IMAGE',
    NATS_OFFICIAL,
    NATS_STANDIN,
    (image) => startNats(tc, image, natsPort),
  ));
  natsUrl = `nats://127.0.0.1:${natsPort}`;
  const mysqlPort = await freePort();
  const password = `p${Math.floor(Math.random() * 1e9)}`;
  ({ c: mysql } = await startWithFallback(
    'TIDEMARK_TEST_MYSQL_IMAGE',
    MYSQL_OFFICIAL,
    MYSQL_STANDIN,
    (image) =>
      new tc.GenericContainer(image)
        .withEnvironment({ MYSQL_ROOT_PASSWORD: password })
        .withExposedPorts({ container: 3306, host: mysqlPort })
        .withLabels(LABELS)
        .withWaitStrategy(
          tc.Wait.forLogMessage(/ready for connections/, image.includes('standin') ? 1 : 2),
        )
        .withStartupTimeout(120_000)
        .start(),
  ));
  mysqlServerUrl = `mysql://root:${password}@127.0.0.1:${mysqlPort}/`;
  await waitFor(
    'MySQL',
    async () => (await createConnection(mysqlServerUrl)).end().then(() => true),
    30_000,
    250,
  );
}, 300_000);

afterAll(async () => {
  await nats?.stop();
  await mysql?.stop();
});

async function restartContainer(c: StartedTestContainer): Promise<void> {
  const { getContainerRuntimeClient } = await import('testcontainers');
  const runtime = await getContainerRuntimeClient();
  const container = runtime.container.getById(c.getId());
  await runtime.container.stop(container, { timeout: 0 });
  await runtime.container.start(container);
}

interface Vm {
  name: string;
  image: string;
  /** Per job id: the hash of the disk as it was when the job ended (nothing writes during one). */
  expected: Map<string, string>;
}

function hashOf(image: string, dir: string): string {
  const raw = join(dir, `hash-${Math.random().toString(36).slice(2)}.raw`);
  run('qemu-img', ['convert', '-U', '-O', 'raw', image, raw]);
  const h = createHash('sha256').update(readFileSync(raw)).digest('hex');
  rmSync(raw, { force: true });
  return h;
}

/** Retries a call through the hub while it (or what it needs) is down. */
async function through<T>(what: string, call: () => Promise<{ status: number; body: T }>) {
  for (let i = 0; ; i++) {
    try {
      const res = await call();
      if (res.status !== 503) return res;
    } catch {
      // the hub is down
    }
    if (i > 600) throw new Error(`${what}: the hub did not answer for 5 minutes`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function round(seed: number): Promise<void> {
  const random = rng(seed);
  const tmp = tempDir(`tidemark-chaos-${seed}-`);
  const busPrefix = `chaos${seed}`;
  const database = `tidemark_chaos_${seed}`;
  const system = await startSystem({
    natsUrl,
    mysqlUrl: `${mysqlServerUrl}${database}`,
    busPrefix,
    dir: join(tmp.dir, 'services'),
    runners: 2,
    logLevel: 'warn',
    runnerEnv: { TIDEMARK_RUNNER_ACK_WAIT_MS: '4000', TIDEMARK_RUNNER_MAX_ATTEMPTS: '5' },
    serviceEnv: {
      ledger: {
        TIDEMARK_LEDGER_LEASE_MS: '20000',
        TIDEMARK_LEDGER_START_TIMEOUT_MS: '10000',
        TIDEMARK_LEDGER_REAPER_INTERVAL_MS: '1000',
        TIDEMARK_LEDGER_ACK_WAIT_MS: '3000',
      },
    },
  });
  const schedule: string[] = [];
  const counts = { kills: 0, restarts: 0 };
  let db: Connection | undefined;
  let nc: NatsConnection | undefined;
  try {
    const repo = await system.api<{ id: string }>('POST', '/api/v1/repositories', {
      name: 'chaos',
      path: join(tmp.dir, 'repository'),
    });
    const vms: Vm[] = [];
    for (let i = 0; i < VMS; i++) {
      const vm = { name: `vm${i}`, image: join(tmp.dir, `vm${i}.qcow2`), expected: new Map() };
      createImage(vm.image, 4 * MiB);
      writeDisk(vm.image, [{ offset: 0, length: 1 * MiB, pattern: i + 1 }]);
      await system.api('POST', '/api/v1/vms', {
        vm_name: vm.name,
        disks: [{ disk_key: 'disk-0', driver: 'qemu', path: vm.image }],
      });
      vms.push(vm);
    }

    // The chaos: every 1.5-3.5 s one fault, until the jobs are done.
    let done = false;
    const faults = (async () => {
      const targets = ['ledger', 'hub', 'runner-1', 'runner-2', 'nats', 'mysql'] as const;
      while (!done) {
        await new Promise((r) => setTimeout(r, 1500 + random() * 2000));
        if (done) break;
        const t = targets[Math.floor(random() * targets.length)] as (typeof targets)[number];
        const at = new Date().toISOString().slice(11, 23);
        if (t === 'nats' || t === 'mysql') {
          schedule.push(`${at} restart ${t} container`);
          await restartContainer(t === 'nats' ? nats : mysql);
        } else {
          schedule.push(`${at} SIGKILL ${t}, start again`);
          await system.kill(t, 'SIGKILL');
          counts.kills++;
          await new Promise((r) => setTimeout(r, random() * 1000));
          system.start(t);
        }
        counts.restarts++;
      }
    })();

    // Five jobs per VM, one after another; the VMs in parallel. Between jobs the guest writes.
    const jobs: Array<{ vm: Vm; jobId: string }> = [];
    await Promise.all(
      vms.map(async (vm, v) => {
        for (let n = 0; n < JOBS / VMS; n++) {
          const started = await through('start', () =>
            system.api<{ backup_id?: string; error?: string }>('POST', '/api/v1/backups', {
              vm_name: vm.name,
              repository_id: repo.body.id,
              backup_type: 'auto',
            }),
          );
          let jobId = started.body.backup_id as string;
          if (started.status === 409) {
            // An earlier try reached the ledger but its answer was lost (the hub died): that
            // job is this one.
            const list = await through('list', () =>
              system.api<{ backups: Array<{ backup_id: string }> }>(
                'GET',
                `/api/v1/backups?vm_name=${vm.name}&limit=1`,
              ),
            );
            jobId = list.body.backups[0]?.backup_id as string;
          } else if (started.status !== 202) {
            throw new Error(`start ${vm.name}: ${started.status} ${JSON.stringify(started.body)}`);
          }
          jobs.push({ vm, jobId });
          const ended = await waitFor(
            `job ${jobId} to end`,
            async () => {
              const r = await through('get', () =>
                system.api<ApiJob>('GET', `/api/v1/backups/${jobId}`),
              );
              return ['completed', 'failed', 'cancelled'].includes(r.body.status) ? r.body : null;
            },
            600_000,
            250,
          );
          // A presumed failure's copy may still be running: the write waits for the image.
          await waitFor(
            `${vm.name} image free`,
            async () => {
              vm.expected.set(jobId, hashOf(vm.image, tmp.dir));
              writeDisk(vm.image, [
                { offset: (n + 1) * 64 * 1024 * (v + 1), length: 65536, pattern: 0x40 + n },
              ]);
              return true;
            },
            120_000,
            250,
          ).catch((err: unknown) => {
            // Who holds the image: the chain of processes, for the report.
            const ps = run('ps', ['-eo', 'pid,ppid,stat,etime,args']);
            const holders = ps.split('\n').filter((l) => l.includes(vm.image) || /PID/.test(l));
            throw new Error(
              `${String(err)}\njob ${jobId} ended ${ended.status} ${ended.error_code ?? ''}\n${holders.join('\n')}\n${ps}`,
            );
          });
        }
      }),
    );
    done = true;
    await faults;

    // Every fault was undone at once; let the reapers and redeliveries finish what is left.
    db = await createConnection(`${mysqlServerUrl}${database}`);
    const conn = db;
    await waitFor(
      'no job queued or running',
      async () => {
        const [rows] = await conn.query<RowDataPacket[]>(
          "SELECT COUNT(*) AS n FROM backup_jobs WHERE status IN ('queued', 'running')",
        );
        return Number(rows[0]?.n) === 0;
      },
      120_000,
      500,
    );

    // 1. Every job ended with a reason.
    const [rows] = await db.query<RowDataPacket[]>(
      'SELECT id, status, error_code, error_message FROM backup_jobs ORDER BY created_at',
    );
    const byStatus: Record<string, number> = {};
    for (const r of rows) {
      const key =
        r.status === 'completed' ? 'completed' : `${r.status as string} ${r.error_code as string}`;
      byStatus[key] = (byStatus[key] ?? 0) + 1;
    }
    const firstFailure = rows.find((r) => r.status !== 'completed');
    if (firstFailure)
      say(
        `first failure: ${firstFailure.error_code as string}: ${firstFailure.error_message as string}`,
      );
    expect(rows).toHaveLength(JOBS);
    // Failures are the faults' doing, each with its reason; most jobs still complete.
    const explained = new Set([
      'LEASE_EXPIRED',
      'START_NOT_PUBLISHED',
      'TOO_MANY_ATTEMPTS',
      'INTERRUPTED',
      'SOURCE_UNAVAILABLE',
      'CLIENT_EXITED',
    ]);
    const unexplained = rows.filter(
      (r) => r.status !== 'completed' && !explained.has(r.error_code as string),
    );
    expect(
      unexplained.map(
        (r) => `${r.id as string} ${r.error_code as string}: ${r.error_message as string}`,
      ),
    ).toEqual([]);
    expect(rows.filter((r) => r.status === 'completed').length).toBeGreaterThanOrEqual(JOBS / 2);

    // 2. Each completed job: every disk's change_id recorded, its completion applied once.
    const completed = rows.filter((r) => r.status === 'completed').map((r) => r.id as string);
    const [disks] = await db.query<RowDataPacket[]>(
      'SELECT job_id, change_id FROM backup_disks WHERE job_id IN (?)',
      [completed.length ? completed : ['-']],
    );
    const missing = disks.filter((d) => !d.change_id);
    const [dups] = await db.query<RowDataPacket[]>(
      "SELECT job_id, COUNT(*) AS n FROM processed_events WHERE event_type = 'backup.completed' AND outcome = 'applied' GROUP BY job_id HAVING n > 1",
    );
    expect(missing).toEqual([]);
    expect(disks).toHaveLength(completed.length);
    expect(dups).toEqual([]);

    // 3. Every completed chain restores to its disk as it was when the job ended.
    const wrong: string[] = [];
    for (const { vm, jobId } of jobs) {
      if (!completed.includes(jobId)) continue;
      const job = (await system.api<ApiJob>('GET', `/api/v1/backups/${jobId}`)).body;
      const raw = await restoreRaw(tmp.dir, job.disks[0]?.target_path as string, jobId);
      const got = createHash('sha256').update(readFileSync(raw)).digest('hex');
      rmSync(raw, { force: true });
      if (got !== vm.expected.get(jobId)) wrong.push(`${vm.name} ${jobId}`);
    }
    expect(wrong).toEqual([]);

    // 4. No event in the stream that the ledger neither applied nor dead-lettered.
    nc = await connect({ servers: natsUrl });
    const jsm = await jetstreamManager(nc);
    const topo = busTopology(busPrefix);
    const [applied] = await db.query<RowDataPacket[]>('SELECT event_id FROM processed_events');
    const appliedIds = new Set(applied.map((r) => r.event_id as string));
    const deadSeqs = new Set<number>();
    const dead = await jsm.streams.info(topo.deadStream);
    for (
      let seq = dead.state.first_seq;
      dead.state.messages > 0 && seq <= dead.state.last_seq;
      seq++
    ) {
      const m = await jsm.streams.getMessage(topo.deadStream, { seq }).catch(() => null);
      if (m) deadSeqs.add(m.json<{ streamSequence: number }>().streamSequence);
    }
    const info = await jsm.streams.info(topo.stream);
    const lost: string[] = [];
    for (
      let seq = info.state.first_seq;
      info.state.messages > 0 && seq <= info.state.last_seq;
      seq++
    ) {
      const m = await jsm.streams.getMessage(topo.stream, { seq }).catch(() => null);
      if (!m) continue;
      const e = m.json<{ id: string; type: string; jobId: string }>();
      if (e.type === 'backup.progress') continue; // guarded by sequence, not recorded by id
      if (!appliedIds.has(e.id) && !deadSeqs.has(seq)) lost.push(`${seq} ${e.type} ${e.jobId}`);
    }
    expect(lost).toEqual([]);

    say(
      `seed ${seed}: ${JOBS} jobs (${Object.entries(byStatus)
        .map(([k, v]) => `${v} ${k}`)
        .join(', ')}), ${counts.kills} kills, ${counts.restarts} restarts, ` +
        `${disks.length} change_ids recorded, duplicates = ${dups.length}, lost = ${lost.length}, ` +
        `wrong restores = ${wrong.length}`,
    );
  } catch (err) {
    say(`seed ${seed} FAILED; schedule:\n${schedule.join('\n')}\n${system.logTail(20)}`);
    throw err;
  } finally {
    say(`seed ${seed} schedule: ${schedule.join('; ')}`);
    await nc?.close();
    await db?.end();
    await system.stop();
    tmp.remove();
  }
}

describe('chaos', () => {
  const seeds = Array.from({ length: ROUNDS }, (_, i) => baseSeed + i);
  it.each(seeds)(
    'seed %i: every job ends, every change_id once, every chain restores, nothing lost',
    async (seed) => {
      say(
        `round with seed ${seed} (TIDEMARK_CHAOS_SEED=${seed} TIDEMARK_CHAOS_ROUNDS=1 replays it)`,
      );
      await round(seed);
    },
  );
});
