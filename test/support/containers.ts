/**
 * Starting the test servers' containers: which image (official, else the local stand-in) and
 * how. Used by global-setup (one NATS and one MySQL for all suites) and by suites that need a
 * server of their own, e.g. a NATS they can stop.
 */
import type { StartedTestContainer } from 'testcontainers';

type Testcontainers = typeof import('testcontainers');

/** Lets a stray run's containers be found: `docker ps --filter label=org.tidemark.test`. */
export const LABELS = { 'org.tidemark.test': 'integration' };

export const NATS_OFFICIAL = 'nats:2.10';
export const NATS_STANDIN = 'tidemark/nats-standin:local';
export const MYSQL_OFFICIAL = 'mysql:8.4';
export const MYSQL_STANDIN = 'tidemark/mariadb-standin:local';

export function say(message: string): void {
  process.stderr.write(`[integration setup] ${message}\n`);
}

/** Names the image and the usual fix: without a registry, only local images can start. */
function startFailed(image: string, envName: string) {
  return (err: unknown): never => {
    throw new Error(
      `could not start ${image}: ${(err instanceof Error ? err.message : String(err)).trim()}` +
        ` (no registry? build the stand-ins with infra/images/build-standins.sh and set ${envName}, as .ci/run does)`,
      { cause: err },
    );
  };
}

/**
 * A NATS server with JetStream and monitoring. With `hostPort`, bound to that host port, so
 * that it keeps its address when the container is stopped and started again.
 */
export async function startNats(
  tc: Testcontainers,
  image: string,
  hostPort?: number,
): Promise<StartedTestContainer> {
  return new tc.GenericContainer(image)
    .withCommand(['-js', '-m', '8222'])
    .withExposedPorts(hostPort ? { container: 4222, host: hostPort } : 4222)
    .withLabels(LABELS)
    .withWaitStrategy(tc.Wait.forLogMessage(/Server is ready/))
    .start();
}

/**
 * Starts the image the variable names; with none named, the official image, and where that
 * cannot be had (no registry reachable) the local stand-in that infra/images/build-standins.sh
 * built, saying so. A named image is never swapped for another.
 */
export async function startWithFallback(
  envName: string,
  official: string,
  standin: string,
  start: (image: string) => Promise<StartedTestContainer>,
): Promise<{ c: StartedTestContainer; image: string }> {
  const named = process.env[envName];
  if (named) return { c: await start(named).catch(startFailed(named, envName)), image: named };
  try {
    return { c: await start(official), image: official };
  } catch (officialErr) {
    say(`${official} could not start (${String(officialErr).split('\n')[0]}); trying ${standin}`);
    try {
      return { c: await start(standin), image: standin };
    } catch {
      return startFailed(official, envName)(officialErr);
    }
  }
}

/**
 * Stops a container at once (no grace: a crash, not a shutdown); `startContainer` brings the
 * same container back, with its data and its fixed host ports.
 */
export async function stopContainer(c: StartedTestContainer): Promise<void> {
  const { getContainerRuntimeClient } = await import('testcontainers');
  const runtime = await getContainerRuntimeClient();
  await runtime.container.stop(runtime.container.getById(c.getId()), { timeout: 0 });
}

export async function startContainer(c: StartedTestContainer): Promise<void> {
  const { getContainerRuntimeClient } = await import('testcontainers');
  const runtime = await getContainerRuntimeClient();
  await runtime.container.start(runtime.container.getById(c.getId()));
}
