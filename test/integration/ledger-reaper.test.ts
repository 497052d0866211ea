import { createLogger } from '@tidemark/shared';
import { startEventConsumer, type EventConsumer } from '@tidemark/ledger/nats/event-consumer';
import { createDataSource } from '@tidemark/ledger/persistence/data-source';
import { reapOnce } from '@tidemark/ledger/reaper';
import { uniqueName, waitFor } from '../support/env';
import {
  createLedgerWorld,
  seedReferences,
  startData,
  type LedgerWorld,
} from '../support/ledger-harness';

describe('ledger: jobs whose backup.start never reached the bus', () => {
  let world: LedgerWorld;
  let repositoryId: string;

  beforeAll(async () => {
    world = await createLedgerWorld({
      TIDEMARK_LEDGER_START_TIMEOUT_MS: '1500',
      TIDEMARK_LEDGER_LEASE_MS: '1500',
      TIDEMARK_LEDGER_REAPER_INTERVAL_MS: '200',
    });
    await world.startLedger();
    ({ repositoryId } = await seedReferences(world));
  });
  afterAll(() => world.close());

  /** Once the reaper failed the job, a completion that still comes is recorded all the same. */
  async function expectLateCompletionRecorded(jobId: string, vm: string, changeId: string) {
    await world.waitForJob(jobId, (r) => r.status === 'failed', 10000);
    await world.publish('backup.completed', jobId, {
      vmName: vm,
      backupType: 'full',
      repositoryId,
      bytesTransferred: 5,
      disks: [{ diskKey: 'disk-2000', changeId, bytesTransferred: 5 }],
    });
    const row = await world.waitForJob(jobId, (r) => r.status === 'completed');
    expect(row).toMatchObject({ change_id: changeId, error_code: null });
  }

  it('fails a job created by request whose start never came, and frees the VM', async () => {
    const vm = uniqueName('vm');
    const lost = uniqueName('backup-');
    await world.ask('jobs.create', {
      jobId: lost,
      jobType: 'backup',
      ...startData(repositoryId, vm),
    });
    const row = await world.waitForJob(lost, (r) => r.status === 'failed', 10000);
    expect(row).toMatchObject({ error_code: 'START_NOT_PUBLISHED', retryable: 1 });
    // The VM's active slot is free again.
    const next = uniqueName('backup-');
    await world.ask('jobs.create', {
      jobId: next,
      jobType: 'backup',
      ...startData(repositoryId, vm),
    });
  });

  it('leaves a job alone once its start reached the bus, however long it stays queued', async () => {
    const vm = uniqueName('vm');
    const jobId = uniqueName('backup-');
    const data = startData(repositoryId, vm);
    await world.ask('jobs.create', { jobId, jobType: 'backup', ...data });
    await world.publish('backup.start', jobId, data, { id: jobId });
    await world.drained();
    await new Promise((r) => setTimeout(r, 2500));
    expect(await world.job(jobId)).toMatchObject({ status: 'queued' });
  });

  it('lets a completion that arrives after all override the presumed failure', async () => {
    const vm = uniqueName('vm');
    const jobId = uniqueName('backup-');
    const data = startData(repositoryId, vm);
    await world.ask('jobs.create', { jobId, jobType: 'backup', ...data });
    await expectLateCompletionRecorded(jobId, vm, 'late/1');
  });

  describe('running jobs whose runner went silent', () => {
    const progress = (sequence: number) => ({
      phase: 'copying' as const,
      sequence,
      bytesPerSecond: 1,
      disks: [{ diskKey: 'disk-2000', bytesDone: sequence, bytesTotal: 100 }],
    });

    it('fails a running job without progress for longer than the lease, retryable, and frees the VM', async () => {
      const vm = uniqueName('vm');
      const jobId = uniqueName('backup-');
      await world.publish('backup.start', jobId, startData(repositoryId, vm));
      await world.publish('backup.progress', jobId, progress(1));
      await world.waitForJob(jobId, (r) => r.status === 'running');
      const row = await world.waitForJob(jobId, (r) => r.status === 'failed', 10000);
      expect(row).toMatchObject({ error_code: 'LEASE_EXPIRED', retryable: 1 });
      expect(String(row.error_message)).toContain('no word from the job');
      await world.ask('jobs.create', {
        jobId: uniqueName('backup-'),
        jobType: 'backup',
        ...startData(repositoryId, vm),
      });
    });

    it('keeps a job running while its runner reports, and records a completion after an expiry', async () => {
      const vm = uniqueName('vm');
      const jobId = uniqueName('backup-');
      await world.publish('backup.start', jobId, startData(repositoryId, vm));
      for (let i = 1; i <= 6; i++) {
        await world.publish('backup.progress', jobId, progress(i));
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(await world.job(jobId)).toMatchObject({ status: 'running' });

      await expectLateCompletionRecorded(jobId, vm, 'slow/1');
    });
  });
});

describe('ledger: the lease after the database was away', () => {
  it('is not judged past an event still waiting for its retry, however new the events applied since', async () => {
    // The ledger's own consumer, on a database that is away while one event arrives: that
    // event (job X's failure) is given back for a retry, and a newer one applies before it
    // comes back. The reaper, asked then, must not take X's silence since for a lost runner.
    const world = await createLedgerWorld();
    await world.startLedger(); // migrations and references
    const { repositoryId } = await seedReferences(world);
    await world.ledger?.stop();
    world.ledger = null;
    const ds = createDataSource(world.env.TIDEMARK_MYSQL_URL);
    await ds.initialize();
    let away = false;
    let refused = 0;
    const flaky = new Proxy(ds, {
      get(target, prop) {
        if (prop === 'createQueryRunner' && away)
          return () => {
            refused++;
            throw new Error('the database is away (test)');
          };
        const value = Reflect.get(target, prop, target) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const log = createLogger('ledger', 'silent');
    const leaseMs = 800;
    let reaped: Promise<number> | undefined;
    let consumer: EventConsumer | undefined;
    const jobX = uniqueName('backup-');
    const jobY = uniqueName('backup-');
    try {
      consumer = await startEventConsumer({
        ds: flaky,
        js: world.js,
        jsm: world.jsm,
        topo: world.topo,
        log,
        batchMax: 100,
        ackWaitMs: 3000,
        deferLimit: 5,
        deferDelayMs: 200,
        // The reaper's pass right after Y's start applied (X's failure still waits).
        onCommitted: (events) => {
          if (events.some((e) => e.jobId === jobY) && consumer && !reaped)
            reaped = reapOnce({
              ds,
              log,
              startTimeoutMs: 60_000,
              leaseMs,
              intervalMs: 1000,
              caughtUpTo: () => (consumer as EventConsumer).caughtUpTo(),
            });
        },
      });
      const progress = {
        phase: 'copying' as const,
        sequence: 1,
        bytesPerSecond: 1,
        disks: [{ diskKey: 'disk-2000', bytesDone: 1, bytesTotal: 100 }],
      };
      await world.publish('backup.start', jobX, startData(repositoryId, uniqueName('vm')));
      await world.publish('backup.progress', jobX, progress);
      await world.waitForJob(jobX, (r) => r.status === 'running');

      away = true;
      await world.publish('backup.failed', jobX, {
        code: 'COPY_FAILED',
        message: 'the copy failed',
        retryable: true,
      });
      await waitFor('the failure given back', async () => refused > 0, 5000);
      away = false;
      // Y's start reaches the bus more than a lease after X's last word, and applies first
      // (the failure comes back only after its retry delay).
      await new Promise((r) => setTimeout(r, leaseMs + 200));
      await world.publish('backup.start', jobY, startData(repositoryId, uniqueName('vm')));
      await waitFor('the reaper asked', async () => reaped !== undefined, 5000);
      expect(await reaped).toBe(0);
      const row = await world.waitForJob(jobX, (r) => r.status === 'failed', 10_000);
      expect(row).toMatchObject({ error_code: 'COPY_FAILED' });
    } finally {
      await consumer?.stop();
      await ds.destroy();
      await world.close();
    }
  });
});

describe('ledger: the lease after the database was away for a batch with dead letters', () => {
  it('is judged from now again once every event is settled', async () => {
    // A batch holds malformed events (dead-lettered first) and a valid one, on a database that
    // is away: only the valid one is given back for a retry. Once it applied and nothing
    // waits, the ledger has caught up to now, not to the last event it applied.
    const world = await createLedgerWorld();
    await world.startLedger(); // migrations and references
    const { repositoryId } = await seedReferences(world);
    await world.ledger?.stop();
    world.ledger = null;
    const ds = createDataSource(world.env.TIDEMARK_MYSQL_URL);
    await ds.initialize();
    let away = true;
    let refused = 0;
    const flaky = new Proxy(ds, {
      get(target, prop) {
        if (prop === 'createQueryRunner' && away)
          return () => {
            refused++;
            throw new Error('the database is away (test)');
          };
        const value = Reflect.get(target, prop, target) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    let consumer: EventConsumer | undefined;
    const jobId = uniqueName('backup-');
    try {
      const subject = world.topo.subjectFor('backup.start');
      for (let i = 0; i < 10; i++) await world.js.publish(subject, `not json ${i}`);
      await world.publish('backup.start', jobId, startData(repositoryId, uniqueName('vm')));
      for (let i = 0; i < 10; i++) await world.js.publish(subject, `not json either ${i}`);
      // Started after the events are on the bus, so that they come in few batches.
      consumer = await startEventConsumer({
        ds: flaky,
        js: world.js,
        jsm: world.jsm,
        topo: world.topo,
        log: createLogger('ledger', 'silent'),
        batchMax: 100,
        ackWaitMs: 3000,
        deferLimit: 5,
        deferDelayMs: 200,
      });
      await world.waitForDeadLetters(20);
      await waitFor('the start given back', async () => refused > 0, 5000);
      away = false;
      await world.waitForJob(jobId, (r) => r.status === 'queued');
      await world.drained();
      await new Promise((r) => setTimeout(r, 1500));
      const upTo = await consumer.caughtUpTo();
      expect(upTo?.getTime()).toBeGreaterThan(Date.now() - 1000);
    } finally {
      await consumer?.stop();
      await ds.destroy();
      await world.close();
    }
  });
});
