import {
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  askLedger,
  busTopology,
  createLogger,
  ensureStreams,
  makeEvent,
  publishEvent,
  DeadLetterSchema,
  type BusTopology,
  type DeadLetter,
  type EventInputMap,
  type EventType,
  type JobType,
  type QueryName,
  type QueryRequest,
  type QueryResults,
  type TidemarkEvent,
} from '@tidemark/shared';
import { LedgerConfigSchema, type LedgerConfig } from '@tidemark/ledger/config';
import { startLedger, type Ledger, type LedgerHooks } from '@tidemark/ledger/ledger';
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise';
import { testServers, uniqueName, waitFor, withDatabase } from './env';

/**
 * One test's own ledger world: a random bus prefix (own streams and subjects), a random
 * database, and a publisher connection. Real NATS, real MariaDB/MySQL. An override of
 * TIDEMARK_NATS_URL moves the whole world (ledger and publisher) to that server.
 */
export interface LedgerWorld {
  topo: BusTopology;
  config: LedgerConfig;
  env: Record<string, string>;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  db: Connection;
  ledger: Ledger | null;
  startLedger(hooks?: LedgerHooks): Promise<Ledger>;
  publish<T extends EventType>(
    type: T,
    jobId: string,
    data: EventInputMap[T],
    opts?: { jobType?: JobType; id?: string },
  ): Promise<TidemarkEvent<T>>;
  ask<Q extends QueryName>(name: Q, request: QueryRequest<Q>): Promise<QueryResults[Q]>;
  /** A new connection for `db` and the helpers (after the server restarted). */
  reconnect(): Promise<void>;
  rows<T = RowDataPacket>(sql: string, params?: unknown[]): Promise<T[]>;
  /** `SELECT COUNT(*) ...` as a number. */
  count(sql: string, params?: unknown[]): Promise<number>;
  job(jobId: string): Promise<Record<string, unknown> | undefined>;
  waitForJob(
    jobId: string,
    predicate: (row: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  deadLetters(): Promise<DeadLetter[]>;
  waitForDeadLetters(count: number, timeoutMs?: number): Promise<DeadLetter[]>;
  /** Resolves when the ledger's consumer has nothing pending or unacknowledged. */
  drained(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function createLedgerWorld(
  overrides: Record<string, string> = {},
  /** A MySQL server of the test's own (URL without a database); the suites' shared one else. */
  mysqlServerUrl = testServers().mysqlUrl,
): Promise<LedgerWorld> {
  const servers = testServers();
  const prefix = uniqueName('t');
  const database = uniqueName('tidemark_t');
  const env: Record<string, string> = {
    TIDEMARK_NATS_URL: overrides.TIDEMARK_NATS_URL ?? servers.natsUrl,
    TIDEMARK_MYSQL_URL: withDatabase(mysqlServerUrl, database),
    TIDEMARK_BUS_PREFIX: prefix,
    TIDEMARK_LOG_LEVEL: 'silent',
    TIDEMARK_LEDGER_ACK_WAIT_MS: '3000',
    TIDEMARK_LEDGER_DEFER_DELAY_MS: '200',
    TIDEMARK_LEDGER_DEFER_LIMIT: '5',
    ...overrides,
  };
  const config = LedgerConfigSchema.parse(env);
  const topo = busTopology(prefix);
  const nc = await connect({ servers: env.TIDEMARK_NATS_URL });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm, topo);
  const admin = await createConnection(mysqlServerUrl);
  await admin.query(`CREATE DATABASE IF NOT EXISTS \`${database}\``);
  await admin.end();
  const connectDb = () =>
    createConnection({
      uri: env.TIDEMARK_MYSQL_URL,
      supportBigNumbers: true,
      bigNumberStrings: true,
      timezone: 'Z',
    });
  let db = await connectDb();

  const world: LedgerWorld = {
    topo,
    config,
    env,
    nc,
    js,
    jsm,
    db,
    ledger: null,
    async startLedger(hooks) {
      const log = createLogger('ledger', config.TIDEMARK_LOG_LEVEL);
      world.ledger = await startLedger(config, log, hooks);
      return world.ledger;
    },
    async publish(type, jobId, data, opts = {}) {
      const event = makeEvent(type, {
        jobId,
        jobType: opts.jobType ?? 'backup',
        data,
        id: opts.id,
      });
      await publishEvent(js, topo, event);
      return event;
    },
    ask: (name, request) => askLedger(nc, topo, name, request),
    async reconnect() {
      await db.end().catch(() => undefined);
      db = await connectDb();
      world.db = db;
    },
    async rows<T>(sql: string, params: unknown[] = []) {
      const [rows] = await db.query(sql, params);
      return rows as T[];
    },
    async count(sql, params = []) {
      const [rows] = await db.query<RowDataPacket[]>(sql, params);
      return Number(Object.values(rows[0])[0]);
    },
    async job(jobId) {
      const [rows] = await db.query<RowDataPacket[]>('SELECT * FROM backup_jobs WHERE id = ?', [
        jobId,
      ]);
      return rows[0];
    },
    waitForJob(jobId, predicate, timeoutMs = 15000) {
      return waitFor(
        `job ${jobId}`,
        async () => {
          const row = await world.job(jobId);
          return row && predicate(row) ? row : undefined;
        },
        timeoutMs,
      );
    },
    async deadLetters() {
      const info = await jsm.streams.info(topo.deadStream);
      const letters: DeadLetter[] = [];
      for (
        let seq = info.state.first_seq;
        seq <= info.state.last_seq && info.state.messages > 0;
        seq++
      ) {
        const m = await jsm.streams.getMessage(topo.deadStream, { seq });
        if (m) letters.push(DeadLetterSchema.parse(m.json()));
      }
      return letters;
    },
    waitForDeadLetters(count, timeoutMs = 15000) {
      return waitFor(
        `${count} dead letters`,
        async () => {
          const letters = await world.deadLetters();
          return letters.length >= count ? letters : undefined;
        },
        timeoutMs,
      );
    },
    async drained(timeoutMs = 20000) {
      await waitFor(
        'the ledger to drain its consumer',
        async () => {
          const info = await jsm.consumers.info(topo.stream, topo.ledgerConsumer);
          return info.num_pending === 0 && info.num_ack_pending === 0;
        },
        timeoutMs,
      );
    },
    async close() {
      await world.ledger?.stop().catch(() => undefined);
      await jsm.streams.delete(topo.stream).catch(() => undefined);
      await jsm.streams.delete(topo.deadStream).catch(() => undefined);
      await nc.close();
      await db.query(`DROP DATABASE \`${database}\``).catch(() => undefined);
      await db.end();
    },
  };
  return world;
}

/** A repository (and a policy) to point jobs at. */
export async function seedReferences(
  world: LedgerWorld,
): Promise<{ repositoryId: string; policyId: string }> {
  const repo = await world.ask('repositories.create', {
    name: uniqueName('repo'),
    path: '/var/lib/tidemark/repo',
  });
  const policy = await world.ask('policies.create', {
    name: uniqueName('nightly'),
    schedule: '0 2 * * *',
    retentionCount: 7,
  });
  return { repositoryId: repo.id, policyId: policy.id };
}

/** `backup.start` data for a VM with the given disks. */
export function startData(
  repositoryId: string,
  vmName: string,
  diskKeys: string[] = ['disk-2000'],
  extra: Partial<EventInputMap['backup.start']> = {},
): EventInputMap['backup.start'] {
  return {
    vmName,
    backupType: 'full',
    repositoryId,
    disks: diskKeys.map((diskKey) => ({
      diskKey,
      source: `/var/lib/vms/${vmName}/${diskKey}.qcow2`,
      targetPath: `/var/lib/tidemark/repo/${vmName}/job/${diskKey}.qcow2`,
    })),
    ...extra,
  };
}

export function completedData(
  repositoryId: string,
  vmName: string,
  disks: EventInputMap['backup.completed']['disks'],
  extra: Partial<EventInputMap['backup.completed']> = {},
): EventInputMap['backup.completed'] {
  return {
    vmName,
    backupType: 'full',
    repositoryId,
    disks,
    bytesTransferred: disks.reduce((n, d) => n + d.bytesTransferred, 0),
    ...extra,
  };
}
