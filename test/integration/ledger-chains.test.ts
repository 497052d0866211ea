/**
 * The ledger keeps every backup point usable when things go wrong: a completion after a failure
 * that was no completion, a poison event among valid ones, runners whose clocks disagree, and a
 * MySQL outage longer than the lease. Real NATS and MariaDB; each case failed before its fix.
 */
import { makeEvent } from '@tidemark/shared';
import { createConnection } from 'mysql2/promise';
import type { StartedTestContainer } from 'testcontainers';
import { LABELS, MYSQL_STANDIN } from '../support/containers';
import { freePort, uniqueName, waitFor } from '../support/env';
import {
  completedData,
  createLedgerWorld,
  seedReferences,
  startData,
  type LedgerWorld,
} from '../support/ledger-harness';

const uuid = '6f1c3f2e-9d4b-4a57-8c1e-2b3a4d5e6f70';
const progressOf = (sequence: number) => ({
  phase: 'copying' as const,
  sequence,
  bytesPerSecond: 1,
  disks: [{ diskKey: 'disk-2000', bytesDone: sequence, bytesTotal: 1000 }],
});

describe('ledger: no backup point lost to a failure, a poison event or a runner clock', () => {
  let world: LedgerWorld;
  let repositoryId: string;

  beforeAll(async () => {
    world = await createLedgerWorld();
    await world.startLedger();
    ({ repositoryId } = await seedReferences(world));
  });
  afterAll(() => world.close());

  it('records a completion that arrives after the runner gave up (TOO_MANY_ATTEMPTS)', async () => {
    const vm = uniqueName('vm');
    const jobId = uniqueName('backup-');
    await world.publish('backup.start', jobId, startData(repositoryId, vm));
    await world.publish('backup.failed', jobId, {
      code: 'TOO_MANY_ATTEMPTS',
      message: 'started 3 times',
      retryable: false,
    });
    await world.waitForJob(jobId, (r) => r.status === 'failed');
    await world.publish(
      'backup.completed',
      jobId,
      completedData(repositoryId, vm, [
        { diskKey: 'disk-2000', changeId: `${uuid}/4`, bytesTransferred: 7 },
      ]),
    );
    const row = await world.waitForJob(jobId, (r) => r.status === 'completed');
    expect(row).toMatchObject({ change_id: `${uuid}/4`, error_code: null });
    expect(await world.ask('chain-head', { vmName: vm })).toMatchObject({ jobId });
  });

  it('dead-letters an event the database refuses as data, and applies the valid ones after it', async () => {
    const poisonJob = uniqueName('backup-');
    // Schema-valid, but 9999-12-31T23:00-05:00 is the year 10000 in UTC: MySQL refuses it (1292).
    const poison = {
      ...makeEvent('backup.start', {
        jobId: poisonJob,
        jobType: 'backup',
        data: startData(repositoryId, uniqueName('vm')),
      }),
      occurredAt: '9999-12-31T23:00:00.000-05:00',
    };
    const before = (await world.deadLetters()).length;
    await world.js.publish(world.topo.subjectFor('backup.start'), JSON.stringify(poison), {
      msgID: poison.id,
    });
    const valid = [uniqueName('backup-'), uniqueName('backup-')];
    for (const jobId of valid)
      await world.publish('backup.start', jobId, startData(repositoryId, uniqueName('vm')));
    for (const jobId of valid) await world.waitForJob(jobId, (r) => r.status === 'queued');
    const letters = await world.waitForDeadLetters(before + 1);
    const letter = letters.find((l) => l.eventId === poison.id);
    expect(letter?.reason).toMatch(/the database refused the change/);
    expect(await world.job(poisonJob)).toBeUndefined();
  });

  it("picks the chain head by the ledger's order of completions, not by a runner's clock", async () => {
    const vm = uniqueName('vm');
    const complete = async (jobId: string, seq: number, occurredAt: Date) => {
      await world.publish('backup.start', jobId, startData(repositoryId, vm));
      const event = makeEvent('backup.completed', {
        jobId,
        jobType: 'backup',
        occurredAt,
        data: completedData(repositoryId, vm, [
          { diskKey: 'disk-2000', changeId: `${uuid}/${seq}`, bytesTransferred: 1 },
        ]),
      });
      await world.js.publish(world.topo.subjectFor('backup.completed'), JSON.stringify(event), {
        msgID: event.id,
      });
      await world.waitForJob(jobId, (r) => r.status === 'completed');
    };
    const hour = 3600_000;
    // Runner A's clock is an hour ahead; runner B's is right. B's job came later.
    await complete(uniqueName('backup-a-'), 1, new Date(Date.now() + hour));
    const later = uniqueName('backup-b-');
    await complete(later, 2, new Date());
    const head = await world.ask('chain-head', { vmName: vm, jobType: 'backup', repositoryId });
    expect(head).toMatchObject({ jobId: later, disks: [{ changeId: `${uuid}/2` }] });
  });
});

describe('ledger: a MySQL outage longer than the lease', () => {
  let mysql: StartedTestContainer;
  let world: LedgerWorld;

  beforeAll(async () => {
    const tc = await import('testcontainers');
    const port = await freePort();
    const image = process.env.TIDEMARK_TEST_MYSQL_IMAGE ?? MYSQL_STANDIN;
    mysql = await new tc.GenericContainer(image)
      .withEnvironment({ MYSQL_ROOT_PASSWORD: 'outage' })
      .withExposedPorts({ container: 3306, host: port })
      .withLabels(LABELS)
      .withWaitStrategy(
        tc.Wait.forLogMessage(/ready for connections/, image.includes('standin') ? 1 : 2),
      )
      .withStartupTimeout(120_000)
      .start();
    const server = `mysql://root:outage@127.0.0.1:${port}/`;
    await waitFor('MySQL', async () => (await createConnection(server)).end().then(() => true));
    world = await createLedgerWorld(
      { TIDEMARK_LEDGER_LEASE_MS: '2000', TIDEMARK_LEDGER_REAPER_INTERVAL_MS: '200' },
      server,
    );
    await world.startLedger();
  }, 180_000);
  afterAll(async () => {
    await world?.close();
    await mysql?.stop();
  });

  it('fails no running job for it: the backlog of its runner’s progress counts, not the outage', async () => {
    const { repositoryId } = await seedReferences(world);
    const vm = uniqueName('vm');
    const jobId = uniqueName('backup-');
    await world.publish('backup.start', jobId, startData(repositoryId, vm));
    let sequence = 0;
    await world.publish('backup.progress', jobId, progressOf(++sequence));
    await world.waitForJob(jobId, (r) => r.status === 'running');
    // The runner goes on reporting every 300 ms, whatever the ledger's database does.
    const runner = setInterval(
      () => void world.publish('backup.progress', jobId, progressOf(++sequence)).catch(() => {}),
      300,
    );
    try {
      const { getContainerRuntimeClient } = await import('testcontainers');
      const runtime = await getContainerRuntimeClient();
      const container = runtime.container.getById(mysql.getId());
      await runtime.container.stop(container, { timeout: 0 });
      await new Promise((r) => setTimeout(r, 5000)); // 2.5 × the lease
      await runtime.container.start(container);
      await waitFor('MySQL back', async () => world.reconnect().then(() => true), 60_000, 250);
      // The ledger catches up; its reaper judges the lease on the runner's reports.
      await waitFor(
        'backlog applied',
        async () => Number((await world.job(jobId))?.progress_sequence) >= sequence - 2,
        30_000,
      );
      await new Promise((r) => setTimeout(r, 3000));
      expect(await world.job(jobId)).toMatchObject({ status: 'running', error_code: null });
      expect(
        await world.count(
          "SELECT COUNT(*) FROM processed_events WHERE job_id = ? AND event_type = 'backup.failed'",
          [jobId],
        ),
      ).toBe(0);
    } finally {
      clearInterval(runner);
    }
    // A runner that really stops is still found out.
    const row = await world.waitForJob(jobId, (r) => r.status === 'failed', 15_000);
    expect(row).toMatchObject({ error_code: 'LEASE_EXPIRED' });
  });
});
