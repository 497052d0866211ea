import {
  AckPolicy,
  DeliverPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type PubAck,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { UnavailableError, type FieldIssue } from '../errors';
import type { TidemarkEvent, EventType } from '../events/envelope';
import { encodePayload, type DeadLetter } from './deadletter';
import type { BusTopology } from './topology';

export interface StreamOptions {
  /** How long events stay in the stream, in milliseconds; 0 keeps them until limits. */
  maxAgeMs?: number;
  /** Window in which a republished `Nats-Msg-Id` is dropped as a duplicate. */
  duplicateWindowMs?: number;
}

/** Creates the event and dead-letter streams, or brings their configuration up to date. */
export async function ensureStreams(
  jsm: JetStreamManager,
  topo: BusTopology,
  opts: StreamOptions = {},
): Promise<void> {
  const duplicate_window = nanos(opts.duplicateWindowMs ?? 2 * 60_000);
  const max_age = nanos(opts.maxAgeMs ?? 0);
  await upsertStream(jsm, {
    name: topo.stream,
    subjects: [topo.eventSubjects],
    storage: StorageType.File,
    duplicate_window,
    max_age,
  });
  await upsertStream(jsm, {
    name: topo.deadStream,
    subjects: [topo.deadSubject],
    storage: StorageType.File,
    duplicate_window,
    max_age: 0,
  });
}

type StreamCfg = Parameters<JetStreamManager['streams']['add']>[0] & { name: string };

async function upsertStream(jsm: JetStreamManager, cfg: StreamCfg): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
  } catch {
    try {
      await jsm.streams.add(cfg);
      return;
    } catch (err) {
      // Another service created it between our two calls: fall through to update.
      if (!/already in use|already exists/i.test(String(err))) throw err;
    }
  }
  await jsm.streams.update(cfg.name, cfg);
}

export interface DurableOptions {
  durable: string;
  filterSubjects: string[];
  /** How long a delivered, unacknowledged message waits before redelivery. */
  ackWaitMs: number;
  /** Deliveries before the server gives up; consumers dead-letter on the last one. */
  maxDeliver: number;
  /** Unacknowledged messages allowed at once across all instances. */
  maxAckPending?: number;
}

/** Creates a durable pull consumer with explicit acks, or updates its configuration. */
export async function ensureDurable(
  jsm: JetStreamManager,
  stream: string,
  opts: DurableOptions,
): Promise<void> {
  const cfg = {
    durable_name: opts.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(opts.ackWaitMs),
    max_deliver: opts.maxDeliver,
    max_ack_pending: opts.maxAckPending ?? 1000,
    ...(opts.filterSubjects.length === 1
      ? { filter_subject: opts.filterSubjects[0] }
      : { filter_subjects: opts.filterSubjects }),
  };
  try {
    await jsm.consumers.info(stream, opts.durable);
  } catch {
    try {
      await jsm.consumers.add(stream, cfg);
      return;
    } catch (err) {
      if (!/already in use|already exists/i.test(String(err))) throw err;
    }
  }
  await jsm.consumers.update(stream, opts.durable, cfg);
}

/**
 * Publishes an event with its id as `Nats-Msg-Id` and checks the PubAck: a publish counts only
 * once the stream has stored it. A retried publish of the same event is dropped by the server.
 */
export async function publishEvent<T extends EventType>(
  js: JetStreamClient,
  topo: BusTopology,
  event: TidemarkEvent<T>,
  timeoutMs = 5000,
): Promise<PubAck> {
  const subject = topo.subjectFor(event.type);
  let ack: PubAck;
  try {
    ack = await js.publish(subject, JSON.stringify(event), {
      msgID: event.id,
      expect: { streamName: topo.stream },
      timeout: timeoutMs,
    });
  } catch (err) {
    throw new UnavailableError(
      `could not publish ${event.type} for job ${event.jobId}: ${String(err)}`,
      {
        cause: err,
      },
    );
  }
  if (ack.stream !== topo.stream) {
    throw new UnavailableError(
      `${event.type} for job ${event.jobId} was stored in stream ${ack.stream}, not ${topo.stream}`,
    );
  }
  return ack;
}

/**
 * Republishes a refused message whole, with the reason, on the dead-letter stream, then
 * terminates it so it is never delivered again. Throws (leaving the message unacknowledged, so
 * it comes back) when the dead letter could not be stored: nothing is dropped silently.
 */
export async function deadLetter(
  js: JetStreamClient,
  topo: BusTopology,
  msg: JsMsg,
  why: { reason: string; issues: FieldIssue[]; consumer: string; eventId?: string | null },
): Promise<DeadLetter> {
  const record: DeadLetter = {
    reason: why.reason,
    issues: why.issues,
    subject: msg.subject,
    streamSequence: msg.info.streamSequence,
    deliveryCount: msg.info.deliveryCount,
    consumer: why.consumer,
    deadAt: new Date().toISOString(),
    eventId: why.eventId ?? msg.headers?.get('Nats-Msg-Id') ?? null,
    ...encodePayload(msg.data),
  };
  const ack = await js.publish(topo.deadSubject, JSON.stringify(record), {
    // One dead letter per stored message, even if this is retried.
    msgID: `dead-${topo.stream}-${msg.info.streamSequence}`,
    expect: { streamName: topo.deadStream },
  });
  if (ack.stream !== topo.deadStream) {
    throw new UnavailableError(`dead letter stored in ${ack.stream}, not ${topo.deadStream}`);
  }
  // Debian's nats-server 2.9 ignores term() with a reason; the reason is in the dead letter.
  msg.term();
  return record;
}
