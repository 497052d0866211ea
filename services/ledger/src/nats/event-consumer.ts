import type {
  ConsumerMessages,
  JetStreamClient,
  JetStreamManager,
  JsMsg,
} from '@nats-io/jetstream';
import {
  deadLetter,
  ensureDurable,
  parseEvent,
  type AnyEvent,
  type BusTopology,
  type FieldIssue,
  type Logger,
  type ParseResult,
} from '@tidemark/shared';
import type { DataSource } from 'typeorm';
import { applyEventsIsolating, type Outcome } from '../persistence/event-store';

export interface EventConsumerOptions {
  ds: DataSource;
  js: JetStreamClient;
  jsm: JetStreamManager;
  topo: BusTopology;
  log: Logger;
  /** Most events committed in one transaction. */
  batchMax: number;
  ackWaitMs: number;
  /** Deliveries of an event for a job the ledger does not know yet before it is dead-lettered. */
  deferLimit: number;
  /** Wait before an event for an unknown job is delivered again. */
  deferDelayMs: number;
  /** Called after each commit with the events it applied (benchmarks and tests measure here). */
  onCommitted?: (events: AnyEvent[], outcomes: Outcome[]) => void;
}

export interface EventConsumer {
  /**
   * How far the ledger has caught up with the bus: now, when nothing is waiting to be applied;
   * else when the bus took the latest event applied (null when none has been since start), but
   * never past an older event still waiting (given back for a retry while the database was
   * away, say, while newer ones applied). The reaper judges leases against this, so a backlog
   * never reads as silence.
   */
  caughtUpTo(): Promise<Date | null>;
  stop(): Promise<void>;
}

interface Item {
  m: JsMsg;
  parsed: ParseResult;
}

/**
 * Consumes `backup.>` through one durable pull consumer and applies events with group commit:
 * whatever has arrived while the previous transaction committed goes into the next one, so
 * the ledger needs no timer to fill batches and pays one commit per batch, not per event.
 * An event is acknowledged only after its transaction committed.
 */
export async function startEventConsumer(opts: EventConsumerOptions): Promise<EventConsumer> {
  const { js, jsm, topo, log } = opts;
  await ensureDurable(jsm, topo.stream, {
    durable: topo.ledgerConsumer,
    filterSubjects: [topo.eventSubjects],
    ackWaitMs: opts.ackWaitMs,
    // Unlimited: a database outage must delay events, never drop them. Events that can never
    // apply are dead-lettered by this consumer itself.
    maxDeliver: -1,
    maxAckPending: opts.batchMax * 4,
  });
  const consumer = await js.consumers.get(topo.stream, topo.ledgerConsumer);
  const messages: ConsumerMessages = await consumer.consume({
    max_messages: opts.batchMax * 2,
  });

  const queue: Item[] = [];
  let wake: () => void = () => undefined;
  let closed = false;
  let busy = false;
  let latestApplied: Date | null = null;
  // Stream sequences given back and not yet seen again: deferrals (a job not known yet) and
  // retries (the database did not answer). Only deferrals may stand while caught up.
  const deferred = new Set<number>();
  const retrying = new Set<number>();
  // Stream sequence → when the bus took it, of every event received and not yet settled
  // (applied, dead-lettered or deferred), retries included: the ledger has caught up only to
  // just before the oldest of them, however new the latest one applied.
  const unsettled = new Map<number, number>();
  const settled = (m: JsMsg) => unsettled.delete(m.info.streamSequence);

  // Stream sequence → its item, of the events in `queue` (received, not yet taken into a batch).
  const queued = new Map<number, Item>();
  // Stream sequence → its latest delivery, of every event this ledger holds (queued or in the
  // batch being applied). They are told in progress every third of the ack wait, so that a
  // backlog waiting its turn here is not delivered again (a flood of dead letters, say, that
  // takes longer than the ack wait): a redelivery is work done twice and a copy queued behind
  // the backlog. A ledger that dies stops telling, and the bus delivers them again.
  const held = new Map<number, JsMsg>();
  const release = (m: JsMsg) => {
    if (held.get(m.info.streamSequence) === m) held.delete(m.info.streamSequence);
  };
  const keepAlive = setInterval(
    () => {
      try {
        for (const m of held.values()) m.working();
      } catch (err) {
        // The connection is closing or away: the ack wait decides, as without this.
        log.debug({ err }, 'could not tell held events in progress');
      }
    },
    Math.max(100, Math.floor(opts.ackWaitMs / 3)),
  );
  keepAlive.unref();

  const reader = (async () => {
    for await (const m of messages) {
      const seq = m.info.streamSequence;
      deferred.delete(seq);
      retrying.delete(seq);
      unsettled.set(seq, m.info.timestampNanos / 1e6);
      held.set(seq, m);
      const waiting = queued.get(seq);
      if (waiting) {
        // Delivered again (its ack wait ran out while it waited here): one copy is handled,
        // in its place, through the newest delivery.
        waiting.m = m;
        continue;
      }
      const item = { m, parsed: parseEvent(m.data) };
      queued.set(seq, item);
      queue.push(item);
      wake();
    }
    closed = true;
    clearInterval(keepAlive);
    wake();
  })();

  // One transaction at a time, in stream order: the rules that span jobs (one active job per
  // VM) depend on it. More lanes were measured and gave no more throughput on 2 cores.
  const worker = (async () => {
    for (;;) {
      if (queue.length === 0) {
        if (closed) return;
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      const batch = queue.splice(0, opts.batchMax);
      for (const { m } of batch) queued.delete(m.info.streamSequence);
      busy = true;
      try {
        await processBatch(batch);
        for (const { m } of batch) release(m);
        busy = false;
      } catch (err) {
        // The database did not answer: give every event of the batch back, later.
        log.error(
          { err, events: batch.length },
          'could not apply events; they will be redelivered',
        );
        for (const { m } of batch) {
          release(m);
          // Those already dead-lettered are done: terminated, they never come back, and marked
          // retrying they would keep the ledger from ever being caught up again.
          if (!unsettled.has(m.info.streamSequence)) continue;
          retrying.add(m.info.streamSequence);
          m.nak(2000);
        }
        await sleep(1000);
        busy = false;
      }
    }
  })();

  async function refuse(
    m: JsMsg,
    reason: string,
    issues: FieldIssue[],
    eventId: string | null,
    jobId?: string,
  ) {
    try {
      await deadLetter(js, topo, m, { reason, issues, consumer: topo.ledgerConsumer, eventId });
      settled(m);
      log.warn(
        { jobId, eventId, subject: m.subject, seq: m.info.streamSequence, reason, issues },
        'event dead-lettered',
      );
    } catch (err) {
      log.error(
        { err, jobId, seq: m.info.streamSequence },
        'could not store a dead letter; the event will come back',
      );
      m.nak(2000);
    }
  }

  async function processBatch(batch: Item[]): Promise<void> {
    const valid: { m: JsMsg; event: AnyEvent }[] = [];
    // The dead letters of a batch are stored DEAD_LETTER_WINDOW at a time, each message
    // terminated after its own letter was stored: not one round trip per event, nor so many
    // at once that the last of them wait out their publish timeout behind the others.
    const refusals: Array<() => Promise<void>> = [];
    for (const { m, parsed } of batch) {
      if (parsed.ok) valid.push({ m, event: parsed.event });
      else
        refusals.push(() =>
          refuse(m, parsed.reason, parsed.issues, m.headers?.get('Nats-Msg-Id') ?? null),
        );
    }
    await inWindow(refusals, DEAD_LETTER_WINDOW);
    refusals.length = 0;
    if (valid.length === 0) return;
    const events = valid.map((v) => v.event);
    // The lease of a job runs from when the bus took its runner's word, not from when the
    // ledger got round to applying it (after an outage, a backlog is old news, not silence).
    const heard = new Map(valid.map((v) => [v.event, new Date(v.m.info.timestampNanos / 1e6)]));
    const outcomes = await applyEventsIsolating(opts.ds, events, 'event', heard);
    for (const d of heard.values())
      if (latestApplied === null || d > latestApplied) latestApplied = d;
    opts.onCommitted?.(events, outcomes);
    for (let i = 0; i < valid.length; i++) {
      const { m, event } = valid[i];
      const outcome = outcomes[i];
      // Every line about an event carries its job id.
      const fields = { jobId: event.jobId, eventId: event.id, type: event.type };
      switch (outcome.kind) {
        case 'applied':
          m.ack();
          settled(m);
          if (event.type === 'backup.progress')
            log.debug({ ...fields, status: outcome.job.status }, outcome.note);
          else
            log.info(
              { ...fields, status: outcome.job.status, changeId: outcome.job.changeId },
              outcome.note,
            );
          break;
        case 'ignored':
          m.ack();
          settled(m);
          log.debug({ ...fields, why: outcome.why }, 'event changed nothing');
          break;
        case 'duplicate':
          m.ack();
          settled(m);
          log.debug(fields, 'event already applied');
          break;
        case 'rejected':
          refusals.push(() => refuse(m, outcome.reason, outcome.issues, event.id, event.jobId));
          break;
        case 'deferred':
          if (m.info.deliveryCount >= opts.deferLimit) {
            refusals.push(() =>
              refuse(
                m,
                `${outcome.why}; gave up after ${m.info.deliveryCount} deliveries`,
                [{ path: 'jobId', message: `no job ${event.jobId} was ever started` }],
                event.id,
                event.jobId,
              ),
            );
          } else {
            deferred.add(m.info.streamSequence);
            settled(m); // a deferral may stand while caught up (its job is not known yet)
            m.nak(opts.deferDelayMs);
            log.info(
              { ...fields, why: outcome.why, deliveries: m.info.deliveryCount },
              'event deferred',
            );
          }
          break;
        default: {
          const never: never = outcome;
          throw new TypeError(`unhandled outcome ${JSON.stringify(never)}`);
        }
      }
    }
    await inWindow(refusals, DEAD_LETTER_WINDOW);
  }

  return {
    async caughtUpTo() {
      if (queue.length === 0 && !busy && retrying.size === 0) {
        const info = await jsm.consumers.info(topo.stream, topo.ledgerConsumer);
        // Nothing undelivered, and every delivered-but-unacknowledged event is a deferral of
        // ours (not one given back for a retry, nor one held by a ledger that died).
        if (info.num_pending === 0 && info.num_ack_pending <= deferred.size) return new Date();
      }
      const oldestWaiting = Math.min(...unsettled.values());
      if (latestApplied !== null && oldestWaiting <= latestApplied.getTime())
        return new Date(oldestWaiting - 1);
      return latestApplied;
    },
    async stop() {
      clearInterval(keepAlive);
      await messages.close();
      await reader;
      await worker;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Dead letters stored at once (a few MB of a flood of large malformed events). */
const DEAD_LETTER_WINDOW = 64;

/** Runs every task, at most `size` at a time. */
async function inWindow(tasks: Array<() => Promise<void>>, size: number): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < tasks.length) await (tasks[next++] as () => Promise<void>)();
  };
  await Promise.all(Array.from({ length: Math.min(size, tasks.length) }, lane));
}
