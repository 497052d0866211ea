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

  const reader = (async () => {
    for await (const m of messages) {
      queue.push({ m, parsed: parseEvent(m.data) });
      wake();
    }
    closed = true;
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
      try {
        await processBatch(batch);
      } catch (err) {
        // The database did not answer: give every event of the batch back, later.
        log.error(
          { err, events: batch.length },
          'could not apply events; they will be redelivered',
        );
        for (const { m } of batch) m.nak(2000);
        await sleep(1000);
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
    for (const { m, parsed } of batch) {
      if (parsed.ok) valid.push({ m, event: parsed.event });
      else await refuse(m, parsed.reason, parsed.issues, m.headers?.get('Nats-Msg-Id') ?? null);
    }
    if (valid.length === 0) return;
    const events = valid.map((v) => v.event);
    const outcomes = await applyEventsIsolating(opts.ds, events);
    opts.onCommitted?.(events, outcomes);
    for (let i = 0; i < valid.length; i++) {
      const { m, event } = valid[i];
      const outcome = outcomes[i];
      // Every line about an event carries its job id.
      const fields = { jobId: event.jobId, eventId: event.id, type: event.type };
      switch (outcome.kind) {
        case 'applied':
          m.ack();
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
          log.debug({ ...fields, why: outcome.why }, 'event changed nothing');
          break;
        case 'duplicate':
          m.ack();
          log.debug(fields, 'event already applied');
          break;
        case 'rejected':
          await refuse(m, outcome.reason, outcome.issues, event.id, event.jobId);
          break;
        case 'deferred':
          if (m.info.deliveryCount >= opts.deferLimit) {
            await refuse(
              m,
              `${outcome.why}; gave up after ${m.info.deliveryCount} deliveries`,
              [{ path: 'jobId', message: `no job ${event.jobId} was ever started` }],
              event.id,
              event.jobId,
            );
          } else {
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
  }

  return {
    async stop() {
      await messages.close();
      await reader;
      await worker;
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
