import type { JetStreamClient, PubAck } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  UnavailableError,
  askLedger,
  publishEvent,
  type BusTopology,
  type EventType,
  type Logger,
  type QueryName,
  type QueryRequest,
  type QueryResults,
  type TidemarkEvent,
} from '@tidemark/shared';

/** The hub's whole view of NATS: ledger queries and checked publishes. */
export interface Bus {
  /** Asks the ledger; UnavailableError when it (or NATS) does not answer in time. */
  ask<Q extends QueryName>(name: Q, request: QueryRequest<Q>): Promise<QueryResults[Q]>;
  /** Resolves once the stream stored the event; UnavailableError otherwise. */
  publish<T extends EventType>(event: TidemarkEvent<T>): Promise<PubAck>;
}

export interface BusDeps {
  nc: NatsConnection;
  js: JetStreamClient;
  topo: BusTopology;
  /** For each ledger answer and each PubAck. */
  timeoutMs: number;
  log: Logger;
}

export function createBus({ nc, js, topo, timeoutMs, log }: BusDeps): Bus {
  // While the client reconnects it buffers what it is given and sends it once back. A request
  // the hub already answered 503 for must not reach the ledger later, so none is given then.
  let connected = true;
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect') {
        connected = false;
        log.warn({ server: status.server }, 'NATS connection lost; answering 503 until it is back');
      } else if (status.type === 'reconnect') {
        connected = true;
        log.info({ server: status.server }, 'NATS connection back');
      }
    }
  })().catch((err: unknown) => log.error({ err }, 'NATS status watch ended'));

  function checkConnected(what: string): void {
    if (!connected || nc.isClosed()) {
      throw new UnavailableError(`NATS is not connected, so ${what} could not be sent`);
    }
  }

  return {
    async ask(name, request) {
      checkConnected(`the ledger query ${name}`);
      return askLedger(nc, topo, name, request, timeoutMs);
    },
    async publish(event) {
      checkConnected(`${event.type} for job ${event.jobId}`);
      try {
        return await publishEvent(js, topo, event, timeoutMs);
      } catch (err) {
        // The first attempt may have been stored with its PubAck lost: the same Nats-Msg-Id
        // makes the retry a no-op then (the server answers `duplicate`).
        checkConnected(`${event.type} for job ${event.jobId}`);
        log.warn({ err, jobId: event.jobId, eventId: event.id }, 'publish failed; retrying once');
        return publishEvent(js, topo, event, timeoutMs);
      }
    },
  };
}
