import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  busTopology,
  deadLetter,
  ensureDurable,
  ensureStreams,
  forJob,
  parseEvent,
  publishEvent,
  redactUrl,
  type BusTopology,
  type Logger,
  type StartData,
  type TidemarkEvent,
  natsConnectOptions,
} from '@tidemark/shared';
import { manifestPath, partialPath } from '@tidemark/backup-client/protocol';
import type { RunnerConfig } from './config';
import { cleanUpAfter, startClient, type ClientOutcome, type ClientRun } from './client-process';
import { admit, type Admission, type AdmissionFacts } from './admission';
import { LockedError, lockTargets, type TargetLock } from './lock';
import { realRoots, refusePaths, type AllowedRoots } from './paths';
import { createLedgerLink } from './ledger-link';
import { progressRelay, type ProgressRelay } from './progress-relay';
import { pointInTimeChecks } from './point-in-time';
import { finishedCopy } from './recover';
import {
  alertEvents,
  completedEvent,
  failedEvent,
  resultEvent,
  type ResultContext,
} from './result';

export interface Runner {
  nc: NatsConnection;
  /** Jobs running now. */
  running(): number;
  /** Deliveries received; jobs started (the client ran), completed, failed and cancelled. */
  stats(): {
    received: number;
    started: number;
    completed: number;
    failed: number;
    cancelled: number;
  };
  /** Stops taking jobs; running ones get `graceMs`, then are stopped and failed (retryable). */
  stop(graceMs?: number): Promise<void>;
}

/**
 * The longest a running job goes without a progress event, even when nothing moved: the
 * ledger's lease (TIDEMARK_LEDGER_LEASE_MS, 5 min by default) fails a job whose runner is silent.
 */
const MAX_HEARTBEAT_MS = 30_000;

function defaultClientMain(): string {
  return require.resolve('@tidemark/backup-client/main');
}

/**
 * How a delivery of `backup.start` is settled: acknowledged, given back after a delay, or
 * already terminated by its dead letter.
 */
type Settlement = 'ack' | { nak: number } | 'dead-lettered';

/** A job this runner holds. */
interface Slot {
  client?: ClientRun;
  /** Set once a cancel arrived: the reason the job's record will carry. */
  cancelled?: string;
  /** The client reported its result: from here on the copy is done, a cancel comes too late. */
  resultKnown?: boolean;
}

/** The files a backup attempt writes; a replica is updated in place and is never among them. */
async function removeAttemptFiles(start: StartData): Promise<void> {
  for (const d of start.disks)
    for (const f of [
      d.targetPath,
      partialPath(d.targetPath),
      manifestPath(d.targetPath),
      partialPath(manifestPath(d.targetPath)),
    ])
      await rm(f, { force: true });
}

/**
 * The appliance-runner: N slots, each pulling one `backup.start` at a time from the durable
 * consumer every runner shares (so jobs spread over runners), running the backup client for it,
 * relaying its progress and publishing its result. The start message is acknowledged only
 * after the result's PubAck; while the client runs the message is kept alive, so JetStream
 * redelivers a job only when its runner is gone.
 */
export async function startRunner(config: RunnerConfig, log: Logger): Promise<Runner> {
  const topo = busTopology(config.TIDEMARK_BUS_PREFIX);
  const clientMain = config.TIDEMARK_RUNNER_CLIENT ?? defaultClientMain();
  // What jobs may write and read comes from here, never from an event. A configured root that
  // is a symlink to `/` or a system directory stops the runner before it takes a job.
  const allowed: AllowedRoots = {
    repository: config.TIDEMARK_REPOSITORY_ROOTS,
    source: config.TIDEMARK_SOURCE_ROOTS,
  };
  await realRoots('TIDEMARK_REPOSITORY_ROOTS', allowed.repository);
  await realRoots('TIDEMARK_SOURCE_ROOTS', allowed.source);
  const workRoot = await mkdtemp(
    join(config.TIDEMARK_RUNNER_WORK_DIR ?? tmpdir(), 'tidemark-runner-'),
  );
  log.info(
    {
      nats: redactUrl(config.TIDEMARK_NATS_URL),
      runnerId: config.TIDEMARK_RUNNER_ID,
      concurrency: config.TIDEMARK_RUNNER_CONCURRENCY,
      clientMain,
      repositoryRoots: allowed.repository,
      sourceRoots: allowed.source,
    },
    'runner starting',
  );
  const nc = await connect(
    natsConnectOptions(config, `tidemark-runner-${config.TIDEMARK_RUNNER_ID}`),
  );
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm, topo);
  await ensureDurable(jsm, topo.stream, {
    durable: topo.runnerConsumer,
    filterSubjects: [topo.subjectFor('backup.start')],
    ackWaitMs: config.TIDEMARK_RUNNER_ACK_WAIT_MS,
    // One more than the attempts: the last delivery only records the failure.
    maxDeliver: config.TIDEMARK_RUNNER_MAX_ATTEMPTS + 1,
    maxAckPending: 10_000,
  });
  const js = jetstream(nc);
  const consumer = await js.consumers.get(topo.stream, topo.runnerConsumer);

  const ledger = createLedgerLink(nc, topo);
  let stopping = false;
  const counts = { received: 0, started: 0, completed: 0, failed: 0, cancelled: 0 };
  const active = new Map<string, Slot>();

  /** Stops a job of this runner's on request; a job it does not hold is another's business. */
  const cancel = (jobId: string, reason: string, how: string): void => {
    const slot = active.get(jobId);
    if (!slot || slot.cancelled !== undefined) return;
    slot.cancelled = reason;
    if (slot.resultKnown) {
      log.info({ jobId, how }, 'cancel came after the copy finished; its result stands');
      return;
    }
    log.info({ jobId, how, reason }, 'job cancelled: stopping the client');
    slot.client?.stop();
  };
  // Every runner hears every cancel; the one holding the job acts. A cancel missed while NATS
  // was away is caught by the ledger check each heartbeat.
  const cancels = nc.subscribe(topo.subjectFor('backup.cancel'), {
    callback: (err, msg) => {
      if (err) return log.warn({ err: String(err) }, 'cancel subscription error');
      const parsed = parseEvent(msg.data);
      if (!parsed.ok || parsed.event.type !== 'backup.cancel') {
        return log.warn({ reason: parsed.ok ? 'not a cancel' : parsed.reason }, 'bad cancel');
      }
      const e = parsed.event;
      cancel(e.jobId, e.data.reason ?? 'cancelled on request', 'backup.cancel');
    },
  });

  const publish = async (event: TidemarkEvent, jobLog: Logger): Promise<void> => {
    // A result must reach the stream: retry until it does (the start message stays unacked
    // meanwhile, so a runner that dies here has the job redone, never lost).
    for (let attempt = 1; ; attempt++) {
      try {
        await publishEvent(js, topo, event);
        return;
      } catch (err) {
        if (attempt >= 60) throw err;
        jobLog.warn({ err: String(err), attempt }, `publishing ${event.type} failed; retrying`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  };

  /**
   * Gathers the facts `admit` asks for, one at a time, until it decides. The lock it takes for
   * the attempt is handed to `onLock` (released by the caller, whatever happens next).
   */
  const admission = async (
    job: ResultContext,
    attempt: number,
    slot: Slot,
    jobLog: Logger,
    onLock: (lock: TargetLock) => void,
  ): Promise<Exclude<Admission, { kind: 'need' }>> => {
    const facts: AdmissionFacts = {
      jobId: job.jobId,
      jobType: job.jobType,
      attempt,
      maxAttempts: config.TIDEMARK_RUNNER_MAX_ATTEMPTS,
    };
    for (;;) {
      facts.cancelHeard = slot.cancelled;
      const decided = admit(facts, config.TIDEMARK_RUNNER_ACK_WAIT_MS);
      if (decided.kind !== 'need') return decided;
      switch (decided.fact) {
        case 'record':
          facts.record = await ledger.recordedStatus(job.jobId, jobLog);
          break;
        case 'paths':
          facts.paths = await refusePaths(
            job.start,
            allowed,
            (id) => ledger.repositoryRoot(id),
            jobLog,
          );
          break;
        case 'lock':
          try {
            onLock(
              await lockTargets(
                job.start.disks.map((d) => d.targetPath),
                { runnerId: config.TIDEMARK_RUNNER_ID, jobId: job.jobId, attempt },
                config.TIDEMARK_RUNNER_ACK_WAIT_MS,
              ),
            );
            facts.lock = 'held';
          } catch (err) {
            if (!(err instanceof LockedError)) throw err;
            jobLog.warn({ err: err.message }, 'another attempt holds the targets');
            facts.lock = 'busy';
          }
          break;
        case 'earlier':
          facts.earlier = await finishedCopy(job.jobId, job.start);
          break;
        default: {
          const never: never = decided.fact;
          throw new TypeError(`unknown fact ${String(never)}`);
        }
      }
    }
  };

  /** Runs the client for an admitted job and reports how it ended. */
  const execute = async (
    job: ResultContext,
    slot: Slot,
    jobLog: Logger,
    relay: ProgressRelay,
  ): Promise<void> => {
    jobLog.info({ disks: job.start.disks.map((d) => d.diskKey) }, 'job started');
    counts.started++;
    const pointInTime = pointInTimeChecks({
      ask: () => ledger.recordedStatus(job.jobId, jobLog),
      giveUp: () => stopping,
      onAfterEnd: (why) => {
        jobLog.warn({ err: why }, 'the job ended before its point in time: stopping the copy');
        slot.client?.stop();
      },
    });
    const client = await startClient({
      clientMain,
      jobId: job.jobId,
      jobType: job.jobType,
      start: job.start,
      workDir: workRoot,
      log: jobLog,
      onProgress: relay.fromClient,
      onPointInTime: (diskKey) => pointInTime.taken(diskKey),
    });
    slot.client = client;
    if (stopping || slot.cancelled !== undefined || pointInTime.ended() !== undefined)
      client.stop();
    try {
      await report(job, slot, jobLog, client, pointInTime);
    } finally {
      await client.exited;
      if (client.abnormal()) {
        // It died without its teardown: what it made (a running disk's export, backup job and
        // fleece node, its work directory) must not hold the disk for the next job.
        const cleaned = await cleanUpAfter({ ...job, clientMain, workDir: workRoot });
        if (cleaned.ok)
          jobLog.warn({ removed: cleaned.removed }, 'the client died; what it left is removed');
        else jobLog.error({ err: cleaned.detail }, 'the client died and its leftovers stay');
      }
    }
  };

  /** Reports how an admitted job's client run ended, and settles the client. */
  const report = async (
    job: ResultContext,
    slot: Slot,
    jobLog: Logger,
    client: ClientRun,
    pointInTime: ReturnType<typeof pointInTimeChecks>,
  ): Promise<void> => {
    const outcome: ClientOutcome = await client.outcome;
    slot.resultKnown = true;
    // A completion counts only if its point in time was inside the job's life.
    const verdict =
      outcome.status === 'completed'
        ? await pointInTime.verdict(outcome.disks.map((d) => d.diskKey))
        : null;
    const endedFirst = verdict?.kind === 'after-end' ? verdict.why : pointInTime.ended();
    if (endedFirst !== undefined && slot.cancelled === undefined) {
      // The job is over in the ledger: this attempt reports nothing, and leaves nothing an
      // attempt of the job could later take for a finished copy.
      client.keepTracking();
      await client.exited;
      if (job.jobType === 'backup') await removeAttemptFiles(job.start);
      counts.failed++;
      jobLog.warn(
        { err: endedFirst, clientStatus: outcome.status },
        "attempt discarded: the job ended before its point in time; the source's change tracking is kept",
      );
      return;
    }
    if (verdict?.kind === 'unverified') {
      client.keepTracking();
      await client.exited;
      if (job.jobType === 'backup') await removeAttemptFiles(job.start);
      await publish(
        failedEvent(
          job,
          {
            code: 'INTERRUPTED',
            message: `the runner stopped before the ledger confirmed the job was open at its point in time: ${verdict.why}`,
            retryable: true,
          },
          randomUUID(),
        ),
        jobLog,
      );
      counts.failed++;
      jobLog.warn({ err: verdict.why }, 'job failed: its point in time unconfirmed');
      return;
    }
    const result = resultEvent(job, outcome, slot.cancelled, randomUUID());
    if (result.type === 'backup.failed' && result.data.code === 'CANCELLED') {
      await client.exited; // its qemu-nbd and partial files are gone once it has exited
      if (job.jobType === 'backup') await removeAttemptFiles(job.start);
      await publish(result, jobLog);
      counts.cancelled++;
      jobLog.info(
        { clientCode: outcome.status === 'failed' ? outcome.code : null },
        'job cancelled; its files removed',
      );
    } else if (result.type === 'backup.completed') {
      await publish(result, jobLog);
      // The old change tracking goes only once the ledger has recorded this completion: a
      // completion it refuses (kept as a dead letter) must not cost the next job its base.
      const refusal = await ledger.recordCompletion(result, jobLog, () => stopping);
      if (refusal === null) client.commit();
      else client.keepTracking();
      await client.exited;
      if (refusal === null) {
        for (const alert of alertEvents(result)) {
          jobLog.error(
            { diskKey: alert.data.diskKey, err: alert.data.message },
            'change tracking untrusted',
          );
          await publish(alert, jobLog);
        }
        counts.completed++;
        jobLog.info(
          { changeIds: result.data.disks.map((d) => `${d.diskKey}=${d.changeId}`) },
          'job completed',
        );
      } else {
        counts.failed++;
        jobLog.error(
          { err: refusal },
          'the ledger refused the completion; the previous change tracking is kept',
        );
        // Ends a job the refusal left running with the reason (a job already completed by
        // another report ignores it): it never waits for the lease.
        await publish(
          failedEvent(
            job,
            { code: 'COMPLETION_REJECTED', message: refusal.slice(0, 4000), retryable: false },
            `${job.jobId}.failed.rejected`,
          ),
          jobLog,
        );
      }
    } else {
      await publish(result, jobLog);
      counts.failed++;
      jobLog.warn({ code: result.data.code, err: result.data.message }, 'job failed');
    }
  };

  /**
   * One delivery of `backup.start`, from admission to its result. Says how the message is to be
   * settled; the caller settles it, in one place.
   */
  const handle = async (m: JsMsg): Promise<Settlement> => {
    counts.received++;
    const parsed = parseEvent(m.data);
    if (!parsed.ok) {
      log.error({ reason: parsed.reason, issues: parsed.issues }, 'invalid backup.start');
      await deadLetter(js, topo, m, {
        reason: parsed.reason,
        issues: parsed.issues,
        consumer: topo.runnerConsumer,
      });
      return 'dead-lettered';
    }
    const event = parsed.event;
    if (event.type !== 'backup.start') return 'ack';
    const attempt = m.info.deliveryCount;
    const jobLog = forJob(log, event.jobId, {
      jobType: event.jobType,
      attempt,
      runnerId: config.TIDEMARK_RUNNER_ID,
    });
    const job: ResultContext = { jobId: event.jobId, jobType: event.jobType, start: event.data };
    const slot: Slot = {};
    active.set(job.jobId, slot);
    let lock: TargetLock | undefined;
    const relay = progressRelay(
      job,
      attempt,
      () => slot.resultKnown === true,
      (progress) =>
        void publishEvent(js, topo, progress).catch((err: unknown) =>
          jobLog.warn({ err: String(err) }, 'progress not published (the next one will be)'),
        ),
    );
    const heartbeatMs = Math.max(
      200,
      Math.min(MAX_HEARTBEAT_MS, Math.floor(config.TIDEMARK_RUNNER_ACK_WAIT_MS / 3)),
    );
    const heartbeat = setInterval(() => {
      m.working();
      void lock?.refresh();
      void checkLedger(job.jobId, jobLog);
      relay.keepAlive(heartbeatMs);
    }, heartbeatMs);
    try {
      const decided = await admission(job, attempt, slot, jobLog, (l) => (lock = l));
      switch (decided.kind) {
        case 'refuse':
          jobLog.error({ code: decided.refusal.code, err: decided.refusal.message }, 'job refused');
          await publish(failedEvent(job, decided.refusal, decided.eventId), jobLog);
          if (decided.refusal.code !== 'TOO_MANY_ATTEMPTS') counts.failed++;
          return 'ack';
        case 'ack-done':
          jobLog.info(decided.why);
          return 'ack';
        case 'nak-later':
          jobLog.warn(decided.why);
          return { nak: decided.delayMs };
        case 'replay-finished-copy':
          await publish(completedEvent(job, decided.disks), jobLog);
          counts.completed++;
          jobLog.info(
            { changeIds: decided.disks.map((d) => `${d.diskKey}=${d.changeId}`) },
            "an earlier attempt's copy had finished: its completion reported again, nothing copied",
          );
          return 'ack';
        case 'ack-failed':
          if (decided.cleanFirst) await removeAttemptFiles(job.start);
          jobLog.info(
            { code: decided.code },
            'job already failed; a start delivered again does not run it anew',
          );
          return 'ack';
        case 'ack-cancelled':
          if (decided.cleanFirst) await removeAttemptFiles(job.start);
          jobLog.info({ reason: decided.reason }, 'job was cancelled before it started');
          counts.cancelled++;
          return 'ack';
        case 'run':
          if (decided.cleanFirst) {
            // An earlier attempt of this job (its runner died) may have left files: this job's
            // own targets, under the lock now held here. Start clean. (A replica is updated in
            // place and stays: the retry copies every change since the old change_id again.)
            await removeAttemptFiles(job.start);
            jobLog.info("earlier attempt's files removed");
          }
          await execute(job, slot, jobLog, relay);
          return 'ack';
        default: {
          const never: never = decided;
          throw new TypeError(`unhandled admission ${JSON.stringify(never)}`);
        }
      }
    } catch (err) {
      // Something of the runner's own (not the client's) failed: give the job back.
      jobLog.error({ err: String(err) }, 'runner error; the job will be redelivered');
      slot.client?.stop(); // the client must not go on (or wait for a commit) unwatched
      return { nak: 5000 };
    } finally {
      clearInterval(heartbeat);
      await lock?.release();
      active.delete(job.jobId);
    }
  };

  /** A cancel recorded by the ledger that this runner missed on the bus (heard each heartbeat). */
  const checkLedger = async (jobId: string, jobLog: Logger): Promise<void> => {
    const job = await ledger.recordedStatus(jobId, jobLog);
    if (typeof job === 'object' && job.status === 'cancelled')
      cancel(jobId, job.errorMessage ?? 'cancelled on request', 'ledger');
  };

  const slots = Array.from({ length: config.TIDEMARK_RUNNER_CONCURRENCY }, async () => {
    while (!stopping) {
      let m: JsMsg | null;
      try {
        m = await consumer.next({ expires: 2000 });
      } catch (err) {
        if (stopping) break;
        log.warn({ err: String(err) }, 'cannot pull a job; retrying');
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (!m) continue;
      if (stopping) {
        m.nak(); // not ours to start any more
        break;
      }
      let settlement: Settlement;
      try {
        settlement = await handle(m);
      } catch (err) {
        // Only the runner's own bus work can end up here (a dead letter not stored, a
        // failure not published): the job stays unacknowledged and comes back.
        log.error({ err: String(err) }, 'job not handled; it will be redelivered');
        settlement = { nak: 5000 };
      }
      // The one place a start is settled.
      if (settlement === 'ack') m.ack();
      else if (settlement !== 'dead-lettered') m.nak(settlement.nak);
    }
  });

  return {
    nc,
    running: () => active.size,
    stats: () => ({ ...counts }),
    async stop(graceMs = config.TIDEMARK_RUNNER_GRACE_MS) {
      if (stopping) return;
      stopping = true;
      log.info({ running: active.size, graceMs }, 'runner stopping: no new jobs');
      const timer = setTimeout(() => {
        for (const [jobId, slot] of active) {
          log.warn({ jobId }, 'grace period over: stopping the client');
          slot.client?.stop();
        }
      }, graceMs);
      await Promise.all(slots);
      clearTimeout(timer);
      cancels.unsubscribe();
      await nc.drain().catch(() => undefined);
      await rm(workRoot, { recursive: true, force: true });
      log.info('runner stopped');
    },
  };
}

export type { BusTopology };
