import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  askLedger,
  busTopology,
  createLogger,
  ensureDurable,
  ensureStreams,
  type AnyEvent,
} from '@tidemark/shared';
import { LedgerConfigSchema } from '@tidemark/ledger/config';
import { startLedger } from '@tidemark/ledger/ledger';
import { createConnection } from 'mysql2/promise';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { PublisherInput, PublisherOutput } from './ledger-publisher';
import { summary, writeResults } from './stats';

const natsUrl = process.env.TIDEMARK_NATS_URL ?? 'nats://127.0.0.1:4222';
const mysqlUrl = process.env.TIDEMARK_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/tidemark';
const JOBS = Number(process.env.TIDEMARK_BENCH_JOBS ?? 10000);
const BATCH_MAX = Number(process.env.TIDEMARK_BENCH_BATCH_MAX ?? 500);
const EVENTS_PER_JOB = 7;
const now = () => performance.timeOrigin + performance.now();

function publish(input: PublisherInput): Promise<PublisherOutput> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(path.join(__dirname, 'ledger-publisher.js'), { workerData: input });
    worker.once('message', (m: { ok: boolean; out?: PublisherOutput; error?: string }) =>
      m.ok && m.out ? resolve(m.out) : reject(new Error(m.error)),
    );
    worker.once('error', reject);
  });
}

function databaseUrl(name: string): string {
  const u = new URL(mysqlUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

interface LedgerRun {
  events: number;
  jobs: number;
  seconds: number;
  eventsPerSecond: number;
  completionToCommitMs: ReturnType<typeof summary>;
  completedJobsVerified: number;
}

/** One run of the real ledger (in this process) fed by the publisher thread. */
async function ledgerRun(
  label: string,
  opts: { jobs: number; batchMax: number; eventsPerSecond: number },
): Promise<LedgerRun> {
  const runId = randomBytes(4).toString('hex');
  const prefix = `bench${runId}`;
  const database = `tidemark_bench_${runId}`;
  const config = LedgerConfigSchema.parse({
    TIDEMARK_NATS_URL: natsUrl,
    TIDEMARK_MYSQL_URL: databaseUrl(database),
    TIDEMARK_BUS_PREFIX: prefix,
    TIDEMARK_LEDGER_BATCH_MAX: String(opts.batchMax),
  });
  const committedAt = new Map<string, number>();
  let lastCommit = 0;
  const ledger = await startLedger(config, createLogger('ledger', 'warn'), {
    onCommitted(events: AnyEvent[]) {
      const t = now();
      lastCommit = t;
      for (const e of events) if (e.type === 'backup.completed') committedAt.set(e.id, t);
    },
  });
  const topo = busTopology(prefix);
  try {
    const repo = await askLedger(ledger.nc, topo, 'repositories.create', {
      name: `bench-${runId}`,
      path: '/srv/tidemark',
    });
    console.error(
      `[${label}] publishing ${opts.jobs * EVENTS_PER_JOB} events (${opts.eventsPerSecond || 'unpaced'} events/s)`,
    );
    const out = await publish({
      natsUrl,
      prefix,
      repositoryId: repo.id,
      jobs: opts.jobs,
      inFlight: 256,
      eventsPerSecond: opts.eventsPerSecond,
      runId,
    });
    const deadline = Date.now() + 300_000;
    while (committedAt.size < opts.jobs) {
      if (Date.now() > deadline)
        throw new Error(
          `[${label}] only ${committedAt.size} of ${opts.jobs} completions committed`,
        );
      await new Promise((r) => setTimeout(r, 20));
    }
    const latencies = Object.entries(out.completedAt).map(
      ([id, at]) => (committedAt.get(id) as number) - at,
    );
    const seconds = (lastCommit - out.firstAt) / 1000;
    // Every job completed with its change_id on both the job row and the disk row.
    const rows: { n: string }[] = await ledger.ds.query(
      "SELECT COUNT(*) AS n FROM backup_jobs j JOIN backup_disks d ON d.job_id = j.id WHERE j.status = 'completed' AND d.change_id IS NOT NULL AND j.change_id = d.change_id",
    );
    const run: LedgerRun = {
      events: out.published,
      jobs: opts.jobs,
      seconds: Math.round(seconds * 1000) / 1000,
      eventsPerSecond: Math.round(out.published / seconds),
      completionToCommitMs: summary(latencies),
      completedJobsVerified: Number(rows[0].n),
    };
    console.error(
      `[${label}] ${run.eventsPerSecond} events/s, completion→commit p50 ${run.completionToCommitMs.p50} ms, p99 ${run.completionToCommitMs.p99} ms`,
    );
    return run;
  } finally {
    await ledger.stop();
    const db = await createConnection(databaseUrl(''));
    await db.query(`DROP DATABASE IF EXISTS \`${database}\``);
    await db.end();
    const nc = await connect({ servers: natsUrl });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(topo.stream).catch(() => undefined);
    await jsm.streams.delete(topo.deadStream).catch(() => undefined);
    await nc.close();
  }
}

/** Reference: the same events through a bare JetStream consumer that only acknowledges them. */
async function busOnlyRun(
  jobs: number,
): Promise<{ events: number; seconds: number; eventsPerSecond: number }> {
  const runId = randomBytes(4).toString('hex');
  const prefix = `benchbus${runId}`;
  const topo = busTopology(prefix);
  const nc = await connect({ servers: natsUrl });
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm, topo);
  await ensureDurable(jsm, topo.stream, {
    durable: 'bare',
    filterSubjects: [topo.eventSubjects],
    ackWaitMs: 30000,
    maxDeliver: -1,
    maxAckPending: 2000,
  });
  const consumer = await jetstream(nc).consumers.get(topo.stream, 'bare');
  const messages = await consumer.consume({ max_messages: 1000 });
  const total = jobs * EVENTS_PER_JOB;
  let seen = 0;
  let last = 0;
  const done = (async () => {
    for await (const m of messages) {
      m.ack();
      last = now();
      if (++seen >= total) break;
    }
  })();
  const out = await publish({
    natsUrl,
    prefix,
    repositoryId: 'none',
    jobs,
    inFlight: 256,
    eventsPerSecond: 0,
    runId,
  });
  await done;
  await messages.close();
  await jsm.streams.delete(topo.stream);
  await jsm.streams.delete(topo.deadStream);
  await nc.close();
  const seconds = (last - out.firstAt) / 1000;
  return {
    events: total,
    seconds: Math.round(seconds * 1000) / 1000,
    eventsPerSecond: Math.round(total / seconds),
  };
}

/** `TIDEMARK_BENCH_PHASES=paced` (comma list) runs only some phases, e.g. for profiling. */
const PHASES = new Set(
  (process.env.TIDEMARK_BENCH_PHASES ?? 'unpaced,paced,per-event,bus').split(','),
);

export async function runLedgerBench(): Promise<void> {
  const startedAt = new Date().toISOString();
  const phase = <T>(name: string, run: () => Promise<T>) =>
    PHASES.has(name) ? run() : Promise.resolve(null);
  const groupCommit = await phase('unpaced', () =>
    ledgerRun('ledger, group commit, unpaced', {
      jobs: JOBS,
      batchMax: BATCH_MAX,
      eventsPerSecond: 0,
    }),
  );
  const paced = await phase('paced', () =>
    ledgerRun('ledger, group commit, 5000 events/s', {
      jobs: JOBS,
      batchMax: BATCH_MAX,
      eventsPerSecond: 5000,
    }),
  );
  const perEvent = await phase('per-event', () =>
    ledgerRun('reference: one transaction per event', {
      jobs: Math.max(1, Math.round(JOBS / 5)),
      batchMax: 1,
      eventsPerSecond: 0,
    }),
  );
  const bus = await phase('bus', async () => {
    const run = await busOnlyRun(JOBS);
    console.error(`[reference: bare JetStream consume+ack] ${run.eventsPerSecond} events/s`);
    return run;
  });
  writeResults('ledger', {
    benchmark: 'ledger',
    startedAt,
    machine: {
      cpus: os.cpus().length,
      cpu: os.cpus()[0]?.model,
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
    description:
      'Synthetic jobs (start, 5 progress, completed; one disk; 1 in 5 a replication) published by a separate thread with 256 publishes in flight, applied by the real ledger on real NATS JetStream and MySQL/MariaDB, all on this machine. eventsPerSecond: events published / (last commit - first publish). completionToCommitMs: from handing backup.completed to the NATS client to the commit of the transaction that recorded its change_id.',
    jobs: JOBS,
    /** Throughput: the unpaced run, publisher flat out. */
    eventsPerSecond: groupCommit?.eventsPerSecond ?? null,
    /**
     * Latency at the goal rate (the paced run). In the unpaced run the publisher outruns the
     * ledger on purpose, so its latencies measure the backlog it builds (see runs).
     */
    completionToCommitMs: paced && {
      p50: paced.completionToCommitMs.p50,
      p99: paced.completionToCommitMs.p99,
    },
    completionToCommitMeasuredAt: 'publisher paced at 5000 events/s',
    runs: { groupCommitUnpaced: groupCommit, groupCommitPacedAt5000: paced },
    reference: { oneTransactionPerEvent: perEvent, bareJetStreamConsumeAck: bus },
    goal: { eventsPerSecond: 5000, completionToCommitP99Ms: 50 },
  });
}
