import { ensureStreams } from '@tidemark/shared';
import type { StartedTestContainer } from 'testcontainers';
import { NATS_OFFICIAL, NATS_STANDIN, startNats, startWithFallback } from '../support/containers';
import { freePort, waitFor } from '../support/env';
import {
  createRepository,
  registerVm,
  startTestHub,
  streamCount,
  type TestHub,
} from '../support/hub-harness';
import { createLedgerWorld, type LedgerWorld } from '../support/ledger-harness';

const ledgerTimeout = { TIDEMARK_LEDGER_TIMEOUT_MS: '1000' };

describe('hub: when NATS stops', () => {
  let nats: StartedTestContainer;
  let world: LedgerWorld;
  let hub: TestHub;

  beforeAll(async () => {
    // Before testcontainers loads: no reaper image to pull; afterAll removes the container.
    process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
    const tc = await import('testcontainers');
    // A fixed host port, so the server keeps its address when it is started again.
    const port = await freePort();
    ({ c: nats } = await startWithFallback(
      'TIDEMARK_TEST_NATS_IMAGE',
      NATS_OFFICIAL,
      NATS_STANDIN,
      (image) => startNats(tc, image, port),
    ));
    world = await createLedgerWorld({ TIDEMARK_NATS_URL: `nats://${nats.getHost()}:${port}` });
    await world.startLedger();
    hub = await startTestHub(world, ledgerTimeout);
  }, 120_000);
  afterAll(async () => {
    await hub?.close();
    await world?.close();
    await nats?.stop();
  });

  it('answers 503 with Retry-After, and once NATS is back no stray job exists', async () => {
    const repo = await createRepository(hub);
    const vmName = await registerVm(hub, ['disk-0', 'disk-1']);
    const body = { vm_name: vmName, repository_id: repo.id, backup_type: 'full' };

    const { getContainerRuntimeClient } = await import('testcontainers');
    const runtime = await getContainerRuntimeClient();
    const container = runtime.container.getById(nats.getId());
    await runtime.container.stop(container, { timeout: 0 });
    try {
      for (const route of ['/api/v1/backups', '/api/v1/replications']) {
        const res = await hub.call('POST', route, body);
        expect(res.status).toBe(503);
        expect(res.headers.get('retry-after')).toBe('5');
        expect(res.body).toEqual({ error: expect.stringMatching(/NATS|ledger/), details: [] });
      }
      const read = await hub.call('GET', `/api/v1/backups?vm_name=${vmName}`);
      expect(read.status).toBe(503);
    } finally {
      await runtime.container.start(container);
    }

    const list = await waitFor(
      'the hub to reach the ledger again',
      async () => {
        const res = await hub.call<{ backups: unknown[] }>(
          'GET',
          `/api/v1/backups?vm_name=${vmName}`,
        );
        return res.status === 200 ? res.body : undefined;
      },
      30_000,
      250,
    );
    expect(list.backups).toEqual([]);
    expect(await world.count('SELECT COUNT(*) FROM backup_jobs WHERE vm_name = ?', [vmName])).toBe(
      0,
    );

    // And the hub works again on the same connection.
    const again = await hub.call('POST', '/api/v1/backups', body);
    expect(again.status).toBe(202);
  });
});

describe('hub: when the ledger or the stream does not answer', () => {
  let world: LedgerWorld;
  let hub: TestHub;

  beforeAll(async () => {
    world = await createLedgerWorld();
    await world.startLedger();
    hub = await startTestHub(world, ledgerTimeout);
  });
  afterAll(async () => {
    await hub?.close();
    await world?.close();
  });

  it('answers 503 while the ledger is stopped, and publishes nothing', async () => {
    const repo = await createRepository(hub);
    const vmName = await registerVm(hub);
    const before = await streamCount(world);
    await world.ledger?.stop();
    try {
      const res = await hub.call('POST', '/api/v1/backups', {
        vm_name: vmName,
        repository_id: repo.id,
        backup_type: 'auto',
      });
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('5');
      expect(res.body).toMatchObject({
        error: expect.stringContaining('the ledger did not answer'),
      });
      expect(await streamCount(world)).toBe(before);
    } finally {
      await world.startLedger();
    }
    expect(await world.count('SELECT COUNT(*) FROM backup_jobs WHERE vm_name = ?', [vmName])).toBe(
      0,
    );
  });

  it('fails the queued job with START_NOT_PUBLISHED when its start cannot be stored', async () => {
    const repo = await createRepository(hub);
    const vmName = await registerVm(hub);
    // No stream: the ledger still answers (its queries need none) but no publish is stored.
    await world.jsm.streams.delete(world.topo.stream);
    try {
      const res = await hub.call('POST', '/api/v1/backups', {
        vm_name: vmName,
        repository_id: repo.id,
        backup_type: 'full',
      });
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('5');
      expect(res.body).toMatchObject({ error: expect.stringContaining('could not be published') });
    } finally {
      await ensureStreams(world.jsm, world.topo);
    }
    const [row] = await world.rows<Record<string, unknown>>(
      'SELECT status, error_code, retryable FROM backup_jobs WHERE vm_name = ?',
      [vmName],
    );
    expect(row).toEqual({ status: 'failed', error_code: 'START_NOT_PUBLISHED', retryable: 1 });
    const failedLine = hub.logLines.find(
      (l) => l.msg === 'backup.start could not be published; failing the queued job',
    );
    expect(failedLine).toMatchObject({ jobId: expect.stringMatching(/^backup-/), vmName });
  });
});
