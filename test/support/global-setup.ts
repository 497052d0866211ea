/**
 * Jest globalSetup of the integration project: one NATS (JetStream) server and one MySQL-type
 * server for all suites. Servers named by TIDEMARK_TEST_NATS_URL / TIDEMARK_TEST_MYSQL_URL are
 * used as they are; any missing one is started with testcontainers, and its URL is put into
 * process.env, which the jest workers inherit (see test/support/env.ts).
 *
 * Images: official `nats:2.10` and `mysql:8.4` by default; where no registry is reachable,
 * TIDEMARK_TEST_NATS_IMAGE / TIDEMARK_TEST_MYSQL_IMAGE name the local stand-ins built by
 * infra/images/build-standins.sh (see .ci/run).
 */
import { randomBytes } from 'node:crypto';
import { createConnection } from 'mysql2/promise';
import type { StartedTestContainer } from 'testcontainers';
import {
  LABELS,
  MYSQL_OFFICIAL,
  MYSQL_STANDIN,
  NATS_OFFICIAL,
  NATS_STANDIN,
  say,
  startNats,
  startWithFallback,
} from './containers';

type Testcontainers = typeof import('testcontainers');

const DATABASE = 'tidemark_test';

/** globalSetup and globalTeardown run in one process and share `globalThis`, not modules. */
export const CONTAINERS_KEY = '__tidemarkTestContainers';
export type ContainerHolder = { [CONTAINERS_KEY]?: StartedTestContainer[] };

/**
 * The official mysql/mariadb images log "ready for connections" twice: first from the
 * temporary server that runs the init scripts without networking. The stand-in logs it once.
 */
function mysqlReadyCount(image: string): number {
  const fromEnv = Number(process.env.TIDEMARK_TEST_MYSQL_READY_COUNT);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return image.includes('standin') ? 1 : 2;
}

async function startMysql(
  tc: Testcontainers,
  image: string,
  password: string,
): Promise<StartedTestContainer> {
  return new tc.GenericContainer(image)
    .withEnvironment({ MYSQL_ROOT_PASSWORD: password, MYSQL_DATABASE: DATABASE })
    .withExposedPorts(3306)
    .withLabels(LABELS)
    .withWaitStrategy(tc.Wait.forLogMessage(/ready for connections/, mysqlReadyCount(image)))
    .withStartupTimeout(120_000)
    .start();
}

/** The port can listen before the server's init is done: wait until a query works. */
async function waitForMysql(url: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const conn = await createConnection(url);
      try {
        await conn.query('SELECT 1');
        return;
      } finally {
        await conn.end();
      }
    } catch (err) {
      if (Date.now() > deadline) {
        throw new Error(`MySQL at ${new URL(url).host} refused queries for ${timeoutMs} ms`, {
          cause: err,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

export default async function globalSetup(): Promise<void> {
  const needNats = !process.env.TIDEMARK_TEST_NATS_URL;
  const needMysql = !process.env.TIDEMARK_TEST_MYSQL_URL;
  if (!needNats && !needMysql) {
    say(
      'using TIDEMARK_TEST_NATS_URL and TIDEMARK_TEST_MYSQL_URL as given; starting no containers',
    );
    return;
  }

  // Before testcontainers loads: Ryuk (its reaper) is one more image to pull, and
  // global-teardown stops the containers itself.
  process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
  const tc = await import('testcontainers');
  const started: StartedTestContainer[] = [];
  (globalThis as ContainerHolder)[CONTAINERS_KEY] = started;
  const t0 = Date.now();

  const password = randomBytes(12).toString('hex');

  const tasks: Promise<void>[] = [];
  if (needNats) {
    tasks.push(
      startWithFallback('TIDEMARK_TEST_NATS_IMAGE', NATS_OFFICIAL, NATS_STANDIN, (image) =>
        startNats(tc, image),
      ).then(({ c, image: natsImage }) => {
        started.push(c);
        process.env.TIDEMARK_TEST_NATS_URL = `nats://${c.getHost()}:${c.getMappedPort(4222)}`;
        process.env.TIDEMARK_TEST_NATS_CONTAINER_ID = c.getId();
        say(`NATS ${natsImage} ready in ${Date.now() - t0} ms`);
      }),
    );
  } else {
    say('using NATS at TIDEMARK_TEST_NATS_URL');
  }
  if (needMysql) {
    tasks.push(
      startWithFallback('TIDEMARK_TEST_MYSQL_IMAGE', MYSQL_OFFICIAL, MYSQL_STANDIN, (image) =>
        startMysql(tc, image, password),
      ).then(async ({ c, image: mysqlImage }) => {
        started.push(c);
        const url = `mysql://root:${password}@${c.getHost()}:${c.getMappedPort(3306)}/${DATABASE}`;
        await waitForMysql(url);
        process.env.TIDEMARK_TEST_MYSQL_URL = url;
        process.env.TIDEMARK_TEST_MYSQL_CONTAINER_ID = c.getId();
        say(`MySQL ${mysqlImage} ready in ${Date.now() - t0} ms`);
      }),
    );
  } else {
    say('using MySQL at TIDEMARK_TEST_MYSQL_URL');
  }

  // Both start at once. If one fails, jest will not run globalTeardown: stop the other here.
  const failed = (await Promise.allSettled(tasks)).filter((r) => r.status === 'rejected');
  if (failed.length > 0) {
    await Promise.allSettled(started.map((c) => c.stop()));
    started.length = 0;
    throw failed[0].reason;
  }
  say(`containers up in ${Date.now() - t0} ms`);
}
