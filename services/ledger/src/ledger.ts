import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  busTopology,
  ensureStreams,
  redactUrl,
  type AnyEvent,
  type Logger,
  natsConnectOptions,
} from '@tidemark/shared';
import type { DataSource } from 'typeorm';
import type { LedgerConfig } from './config';
import { startEventConsumer, type EventConsumer } from './nats/event-consumer';
import { startQueryService } from './nats/query-service';
import { createDataSource, ensureDatabase } from './persistence/data-source';
import type { Outcome } from './persistence/event-store';
import { createQueries } from './queries';
import { startStartReaper } from './reaper';

export interface Ledger {
  ds: DataSource;
  nc: NatsConnection;
  stop(): Promise<void>;
}

export interface LedgerHooks {
  onCommitted?: (events: AnyEvent[], outcomes: Outcome[]) => void;
}

/**
 * Starts the ledger: migrates the database, makes sure the streams exist, answers queries and
 * applies events. Stops cleanly: no event is acknowledged that was not committed.
 */
export async function startLedger(
  config: LedgerConfig,
  log: Logger,
  hooks: LedgerHooks = {},
): Promise<Ledger> {
  const topo = busTopology(config.TIDEMARK_BUS_PREFIX);
  log.info(
    {
      mysql: redactUrl(config.TIDEMARK_MYSQL_URL),
      nats: redactUrl(config.TIDEMARK_NATS_URL),
      stream: topo.stream,
    },
    'ledger starting',
  );

  await ensureDatabase(config.TIDEMARK_MYSQL_URL);
  const ds = createDataSource(config.TIDEMARK_MYSQL_URL, config.TIDEMARK_LEDGER_DB_POOL);
  await ds.initialize();
  const ran = await ds.runMigrations({ transaction: 'each' });
  log.info(
    { migrations: ran.map((m) => m.name) },
    ran.length ? 'migrations applied' : 'schema up to date',
  );

  let nc: NatsConnection;
  try {
    nc = await connect(natsConnectOptions(config, 'tidemark-ledger'));
  } catch (err) {
    await ds.destroy();
    throw err;
  }
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm, topo);
  const querySub = startQueryService(nc, topo, createQueries(ds), log);
  let consumer: EventConsumer;
  try {
    consumer = await startEventConsumer({
      ds,
      js: jetstream(nc),
      jsm,
      topo,
      log,
      batchMax: config.TIDEMARK_LEDGER_BATCH_MAX,
      ackWaitMs: config.TIDEMARK_LEDGER_ACK_WAIT_MS,
      deferLimit: config.TIDEMARK_LEDGER_DEFER_LIMIT,
      deferDelayMs: config.TIDEMARK_LEDGER_DEFER_DELAY_MS,
      onCommitted: hooks.onCommitted,
    });
  } catch (err) {
    await nc.close();
    await ds.destroy();
    throw err;
  }
  const reaper = startStartReaper({
    ds,
    log,
    startTimeoutMs: config.TIDEMARK_LEDGER_START_TIMEOUT_MS,
    leaseMs: config.TIDEMARK_LEDGER_LEASE_MS,
    intervalMs: config.TIDEMARK_LEDGER_REAPER_INTERVAL_MS,
    caughtUpTo: () => consumer.caughtUpTo(),
  });
  log.info('ledger ready');

  return {
    ds,
    nc,
    async stop() {
      querySub.unsubscribe();
      await reaper.stop();
      await consumer.stop();
      await nc.drain();
      await ds.destroy();
      log.info('ledger stopped');
    },
  };
}
