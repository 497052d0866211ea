/**
 * Jest globalTeardown of the integration project: stops the containers global-setup started
 * (none when the servers came from TIDEMARK_TEST_*_URL). Ryuk is off, so nothing else would.
 */
import { CONTAINERS_KEY, type ContainerHolder } from './global-setup';

export default async function globalTeardown(): Promise<void> {
  const holder = globalThis as ContainerHolder;
  const containers = holder[CONTAINERS_KEY] ?? [];
  delete holder[CONTAINERS_KEY];
  if (containers.length === 0) return;
  const t0 = Date.now();
  // stop() kills without a grace period and removes the container (and its volumes).
  const results = await Promise.allSettled(containers.map((c) => c.stop()));
  for (const r of results) {
    if (r.status === 'rejected') {
      process.stderr.write(`[integration teardown] stopping a container failed: ${r.reason}\n`);
    }
  }
  process.stderr.write(
    `[integration teardown] stopped ${containers.length} container(s) in ${Date.now() - t0} ms\n`,
  );
}
