import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  askLedger,
  busTopology,
  deadLetter,
  ensureDurable,
  ensureStreams,
  forJob,
  makeEvent,
  parseEvent,
  publishEvent,
  redactUrl,
  type BusTopology,
  type JobView,
  type Logger,
  type StartData,
  type TidemarkEvent,
  natsConnectOptions,
  ConflictError,
  NotFoundError,
  ValidationError,
} from '@tidemark/shared';
import type { RunnerConfig } from './config';
import {
  startClient,
  type ClientOutcome,
  type ClientProgress,
  type ClientRun,
} from './client-process';
import { LockedError, lockTargets } from './lock';
import { PathOutsideRepositoryError, checkInsideRepository } from './paths';
import { finishedCopy } from './recover';

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

/** Progress events at most this often per job (plus every phase change). */
const PROGRESS_INTERVAL_MS = 1000;
/**
 * The longest a running job goes without a progress event, even when nothing moved: the
 * ledger's lease (TIDEMARK_LEDGER_LEASE_MS, 5 min by default) fails a job whose runner is silent.
 */
const MAX_HEARTBEAT_MS = 30_000;

function defaultClientMain(): string {
  return require.resolve('@tidemark/backup-client/main');
}

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
    for (const f of [d.targetPath, `${d.targetPath}.partial`, `${d.targetPath}.tidemark.json`])
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
  const workRoot = await mkdtemp(
    join(config.TIDEMARK_RUNNER_WORK_DIR ?? tmpdir(), 'tidemark-runner-'),
  );
  log.info(
    {
      nats: redactUrl(config.TIDEMARK_NATS_URL),
      runnerId: config.TIDEMARK_RUNNER_ID,
      concurrency: config.TIDEMARK_RUNNER_CONCURRENCY,
      clientMain,
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

  /**
   * Why the job must not run because of where it would write, or null: every target and backing
   * path must lie inside the job's repository (from the event, else from the ledger).
   */
  const refusePaths = async (
    start: StartData,
    jobLog: Logger,
  ): Promise<{ code: string; message: string; retryable: boolean } | null> => {
    let root = start.repositoryPath;
    if (root === undefined) {
      try {
        root = (await askLedger(nc, topo, 'repositories.get', { id: start.repositoryId }, 5000))
          .path;
      } catch (err) {
        jobLog.warn({ err: String(err) }, 'repository root unknown');
        return {
          code: 'REPOSITORY_UNKNOWN',
          message: `the start names no repositoryPath and the ledger did not give the root of repository ${start.repositoryId}: ${String(err)}`,
          retryable: true,
        };
      }
    }
    try {
      for (const [i, d] of start.disks.entries()) {
        await checkInsideRepository(root, `disks[${i}].targetPath`, d.targetPath);
        if (d.backingPath !== null)
          await checkInsideRepository(root, `disks[${i}].backingPath`, d.backingPath);
      }
      return null;
    } catch (err) {
      if (!(err instanceof PathOutsideRepositoryError)) throw err;
      return { code: 'PATH_OUTSIDE_REPOSITORY', message: err.message, retryable: false };
    }
  };

  /** The job as the ledger has it; 'unknown' when it has none, 'unavailable' when it did not say. */
  const recordedStatus = async (
    jobId: string,
    jobLog: Logger,
  ): Promise<JobView | 'unknown' | 'unavailable'> => {
    try {
      return await askLedger(nc, topo, 'jobs.get', { jobId }, 5000);
    } catch (err) {
      jobLog.debug({ err: String(err) }, 'ledger has no status for the job');
      return err instanceof NotFoundError ? 'unknown' : 'unavailable';
    }
  };

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
   * Has the ledger record `completion` (the same event the stream holds: whichever arrives
   * first applies it, the other finds it applied) and says whether it did: null when recorded
   * with this job's change_ids, else why not. While the ledger cannot answer, it waits: the
   * start message is kept alive meanwhile, and the source keeps both change_ids usable.
   */
  const ledgerVerdict = async (
    completion: TidemarkEvent<'backup.completed'>,
    jobLog: Logger,
  ): Promise<string | null> => {
    for (let attempt = 1; ; attempt++) {
      try {
        const job = await askLedger(
          nc,
          topo,
          'jobs.complete',
          { jobId: completion.jobId, eventId: completion.id, data: completion.data },
          5000,
        );
        const recorded = new Map(job.disks.map((d) => [d.diskKey, d.changeId]));
        const differing = completion.data.disks.filter(
          (d) => recorded.get(d.diskKey) !== d.changeId,
        );
        if (job.status === 'completed' && differing.length === 0) return null;
        return `the ledger holds the job as ${job.status} with change_id ${[...recorded]
          .map(([k, v]) => `${k}=${v ?? 'none'}`)
          .join(', ')}`;
      } catch (err) {
        if (err instanceof ConflictError || err instanceof ValidationError) return err.message;
        // A runner told to stop does not wait for ever: unconfirmed, the source keeps both
        // change_ids, and the next job of the chain starts from whichever the ledger recorded.
        if (stopping && attempt >= 20)
          return `the runner stopped before the ledger confirmed the completion: ${String(err)}`;
        // Not known yet (its start or this completion still on the way) or no answer: ask again.
        if (attempt % 10 === 1)
          jobLog.warn(
            { err: String(err), attempt },
            'the ledger has not confirmed the completion yet; waiting',
          );
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * attempt)));
      }
    }
  };

  const runJob = async (m: JsMsg): Promise<void> => {
    counts.received++;
    const parsed = parseEvent(m.data);
    if (!parsed.ok) {
      log.error({ reason: parsed.reason, issues: parsed.issues }, 'invalid backup.start');
      await deadLetter(js, topo, m, {
        reason: parsed.reason,
        issues: parsed.issues,
        consumer: topo.runnerConsumer,
      });
      return;
    }
    const event = parsed.event;
    if (event.type !== 'backup.start') {
      m.ack();
      return;
    }
    const jobLog = forJob(log, event.jobId, {
      jobType: event.jobType,
      attempt: m.info.deliveryCount,
      runnerId: config.TIDEMARK_RUNNER_ID,
    });
    const start = event.data;
    const base = {
      vmName: start.vmName,
      backupType: start.backupType,
      repositoryId: start.repositoryId,
    };
    const attempt = m.info.deliveryCount;
    if (attempt > config.TIDEMARK_RUNNER_MAX_ATTEMPTS) {
      jobLog.error({ attempts: attempt - 1 }, 'job failed after too many attempts');
      await publish(
        makeEvent('backup.failed', {
          jobId: event.jobId,
          jobType: event.jobType,
          id: `${event.jobId}.failed.attempts`,
          data: {
            code: 'TOO_MANY_ATTEMPTS',
            message: `the job was started ${attempt - 1} times and no runner finished it (each runner stopped or died mid-copy)`,
            retryable: false,
            ...base,
          },
        }),
        jobLog,
      );
      m.ack();
      return;
    }
    const slot: Slot = {};
    active.set(event.jobId, slot);
    const checkLedger = async (): Promise<void> => {
      const job = await recordedStatus(event.jobId, jobLog);
      if (typeof job === 'object' && job.status === 'cancelled') {
        cancel(event.jobId, job.errorMessage ?? 'cancelled on request', 'ledger');
      }
    };
    // Progress sequences rise across attempts: a later attempt's events are never "older".
    let sequence = attempt * 2 ** 32;
    let lastSent = 0; // any progress event, relayed or keep-alive
    let lastRelayed = 0; // the client's own, throttled to one a second
    let lastPhase = '';
    let latest: ClientProgress | undefined; // the client's newest line, relayed or not
    const sendProgress = (p: ClientProgress): void => {
      lastPhase = p.phase;
      lastSent = Date.now();
      const progress = makeEvent('backup.progress', {
        jobId: event.jobId,
        jobType: event.jobType,
        data: {
          phase: p.phase,
          sequence: sequence++,
          disks: p.disks,
          bytesPerSecond: p.bytesPerSecond,
        },
      });
      publishEvent(js, topo, progress).catch((err: unknown) =>
        jobLog.warn({ err: String(err) }, 'progress not published (the next one will be)'),
      );
    };
    const heartbeatMs = Math.max(
      200,
      Math.min(MAX_HEARTBEAT_MS, Math.floor(config.TIDEMARK_RUNNER_ACK_WAIT_MS / 3)),
    );
    let lock: Awaited<ReturnType<typeof lockTargets>> | undefined;
    const heartbeat = setInterval(() => {
      m.working();
      void lock?.refresh();
      void checkLedger();
      // Nothing moved (a long flush, a slow source): say the job is alive all the same.
      if (latest && !slot.resultKnown && Date.now() - lastSent >= heartbeatMs) sendProgress(latest);
    }, heartbeatMs);
    try {
      const found = await recordedStatus(event.jobId, jobLog);
      if (found === 'unavailable' && attempt > 1) {
        // A redelivery may be of a job that completed just before its runner died: never
        // remove (and redo) its files without the ledger's word that it did not complete.
        jobLog.warn('the ledger does not answer; the redelivered job waits for it');
        m.nak(5000);
        return;
      }
      const recorded = typeof found === 'object' ? found : null;
      if (recorded?.status === 'completed') {
        // Its result reached the bus, but its runner died before acknowledging the start. Running
        // it again would replace a recorded backup's files and change_ids: never.
        jobLog.info('job already completed; not run again');
        m.ack();
        return;
      }
      if (recorded?.status === 'cancelled') {
        cancel(event.jobId, recorded.errorMessage ?? 'cancelled on request', 'ledger');
      }
      // A job the ledger has failed (its lease expired while its runner was presumed dead, its
      // start came too late) is over: a start delivered again must not copy it anew. That copy
      // would be a point in time after the job's end, running beside any job of its chain
      // started since (the VM's slot is free). An earlier attempt's finished copy is still
      // reported below: a completion outranks the failure.
      const failedBefore = recorded?.status === 'failed' ? recorded : null;
      const refused = await refusePaths(start, jobLog);
      if (refused) {
        jobLog.error({ code: refused.code, err: refused.message }, 'job refused');
        await publish(
          makeEvent('backup.failed', {
            jobId: event.jobId,
            jobType: event.jobType,
            id: `${event.jobId}.failed.paths`,
            data: { ...refused, ...base },
          }),
          jobLog,
        );
        counts.failed++;
        m.ack();
        return;
      }
      try {
        lock = await lockTargets(
          start.disks.map((d) => d.targetPath),
          { runnerId: config.TIDEMARK_RUNNER_ID, jobId: event.jobId, attempt },
          config.TIDEMARK_RUNNER_ACK_WAIT_MS,
        );
      } catch (err) {
        if (err instanceof LockedError) {
          jobLog.warn({ err: err.message }, 'another attempt holds the targets; trying later');
          m.nak(config.TIDEMARK_RUNNER_ACK_WAIT_MS);
          return;
        }
        throw err;
      }
      const earlier =
        attempt > 1 && event.jobType === 'backup' ? await finishedCopy(event.jobId, start) : null;
      if (earlier) {
        await publish(
          makeEvent('backup.completed', {
            jobId: event.jobId,
            jobType: event.jobType,
            data: {
              ...base,
              policyId: start.policyId,
              parentJobId: start.parentJobId,
              disks: earlier,
              bytesTransferred: earlier.reduce((sum, d) => sum + d.bytesTransferred, 0),
            },
          }),
          jobLog,
        );
        counts.completed++;
        jobLog.info(
          { changeIds: earlier.map((d) => `${d.diskKey}=${d.changeId}`) },
          "an earlier attempt's copy had finished: its completion reported again, nothing copied",
        );
        m.ack();
        return;
      }
      if (attempt > 1 && event.jobType === 'backup') {
        // An earlier attempt of this job (its runner died) may have left files: this job's
        // own targets, under the lock now held here. Start clean. (A replica is updated in
        // place and stays: the retry copies every change since the old change_id again.)
        await removeAttemptFiles(start);
        jobLog.info("earlier attempt's files removed");
      }
      if (failedBefore) {
        jobLog.info(
          { code: failedBefore.errorCode },
          'job already failed; a start delivered again does not run it anew',
        );
        m.ack();
        return;
      }
      if (slot.cancelled !== undefined) {
        // Cancelled before it ran: the ledger has recorded that already; nothing to copy.
        jobLog.info({ reason: slot.cancelled }, 'job was cancelled before it started');
        counts.cancelled++;
        m.ack();
        return;
      }
      jobLog.info({ disks: start.disks.map((d) => d.diskKey) }, 'job started');
      counts.started++;
      const client = await startClient({
        clientMain,
        jobId: event.jobId,
        jobType: event.jobType,
        start,
        workDir: workRoot,
        log: jobLog,
        onProgress: (p) => {
          latest = p;
          const now = Date.now();
          if (p.phase === lastPhase && now - lastRelayed < PROGRESS_INTERVAL_MS) return;
          lastRelayed = now;
          sendProgress(p);
        },
      });
      slot.client = client;
      if (stopping || slot.cancelled !== undefined) client.stop();
      const outcome: ClientOutcome = await client.outcome;
      slot.resultKnown = true;
      const resultId = randomUUID();
      if (outcome.status === 'failed' && slot.cancelled !== undefined) {
        await client.exited; // its qemu-nbd and partial files are gone once it has exited
        if (event.jobType === 'backup') await removeAttemptFiles(start);
        await publish(
          makeEvent('backup.failed', {
            jobId: event.jobId,
            jobType: event.jobType,
            id: resultId,
            data: { code: 'CANCELLED', message: slot.cancelled, retryable: false, ...base },
          }),
          jobLog,
        );
        counts.cancelled++;
        jobLog.info({ clientCode: outcome.code }, 'job cancelled; its files removed');
      } else if (outcome.status === 'completed') {
        const completion = makeEvent('backup.completed', {
          jobId: event.jobId,
          jobType: event.jobType,
          id: resultId,
          data: {
            ...base,
            policyId: start.policyId,
            parentJobId: start.parentJobId,
            disks: outcome.disks,
            bytesTransferred: outcome.bytesTransferred,
          },
        });
        await publish(completion, jobLog);
        // The old change tracking goes only once the ledger has recorded this completion: a
        // completion it refuses (kept as a dead letter) must not cost the next job its base.
        const refusal = await ledgerVerdict(completion, jobLog);
        if (refusal === null) client.commit();
        else client.keepTracking();
        await client.exited;
        if (refusal === null) {
          counts.completed++;
          jobLog.info(
            { changeIds: outcome.disks.map((d) => `${d.diskKey}=${d.changeId}`) },
            'job completed',
          );
        } else {
          counts.failed++;
          jobLog.error(
            { err: refusal },
            'the ledger refused the completion; the previous change tracking is kept',
          );
        }
      } else {
        await publish(
          makeEvent('backup.failed', {
            jobId: event.jobId,
            jobType: event.jobType,
            id: resultId,
            data: {
              code: outcome.code,
              message: outcome.message,
              retryable: outcome.retryable,
              finishedDisks: outcome.finishedDisks,
              ...base,
            },
          }),
          jobLog,
        );
        counts.failed++;
        jobLog.warn({ code: outcome.code, err: outcome.message }, 'job failed');
      }
      m.ack();
    } catch (err) {
      // Something of the runner's own (not the client's) failed: give the job back.
      jobLog.error({ err: String(err) }, 'runner error; the job will be redelivered');
      slot.client?.stop(); // the client must not go on (or wait for a commit) unwatched
      m.nak(5000);
    } finally {
      clearInterval(heartbeat);
      await lock?.release();
      active.delete(event.jobId);
    }
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
      try {
        await runJob(m);
      } catch (err) {
        // Only the runner's own bus work can end up here (a dead letter not stored, a
        // failure not published): the job stays unacknowledged and comes back.
        log.error({ err: String(err) }, 'job not handled; it will be redelivered');
        m.nak(5000);
      }
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
