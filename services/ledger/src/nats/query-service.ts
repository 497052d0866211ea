import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import {
  ErrorCode,
  TidemarkError,
  parseQuery,
  queryNames,
  type BusTopology,
  type Logger,
  type QueryName,
  type QueryReply,
} from '@tidemark/shared';
import type { LedgerQueries } from '../queries';

/** The NATS server's largest message; the client refuses to publish more (1 MiB by default). */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/** The largest reply the connection can send now: the server's `max_payload`. */
export function maxPayloadOf(nc: NatsConnection): number {
  return nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
}

/**
 * Answers `ledger.<query>` requests (request/reply, queue group `ledger`, so several ledgers
 * share the load). Every request is validated; every answer is `{ ok, result | error }`, and
 * fits in one message: an answer larger than the server's `max_payload` is replaced by an
 * error reply saying so. Nothing a request does can end the process.
 */
export function startQueryService(
  nc: NatsConnection,
  topo: BusTopology,
  queries: LedgerQueries,
  log: Logger,
): Subscription {
  const prefix = topo.querySubject('');
  const sub = nc.subscribe(topo.queryWildcard, { queue: `${topo.ledgerConsumer}-queries` });
  (async () => {
    for await (const msg of sub) {
      answer(msg).catch((err: unknown) =>
        log.error({ err, subject: msg.subject }, 'query not answered'),
      );
    }
  })().catch((err) => log.error({ err }, 'query service stopped'));

  async function answer(msg: Msg): Promise<void> {
    const name = msg.subject.slice(prefix.length) as QueryName;
    let reply: QueryReply<unknown>;
    try {
      if (!queryNames.includes(name)) {
        throw new TidemarkError(ErrorCode.Validation, `unknown query ${JSON.stringify(name)}`, [
          { path: 'subject', message: `known queries: ${queryNames.join(', ')}` },
        ]);
      }
      let body: unknown;
      try {
        body = msg.data.length ? JSON.parse(msg.string()) : {};
      } catch (err) {
        throw new TidemarkError(ErrorCode.Validation, `${name} request is not JSON`, [
          { path: '', message: (err as Error).message },
        ]);
      }
      const request = parseQuery(name, body);
      const result = await (queries[name] as (r: typeof request) => Promise<unknown>)(request);
      reply = { ok: true, result };
    } catch (err) {
      if (err instanceof TidemarkError) {
        reply = { ok: false, error: { code: err.code, message: err.message, issues: err.issues } };
      } else {
        log.error({ err, query: name }, 'query failed');
        reply = {
          ok: false,
          error: {
            code: ErrorCode.Unavailable,
            message: `the ledger could not answer ${name}`,
            issues: [],
          },
        };
      }
    }
    if (msg.reply) respond(msg, name, reply);
  }

  /** Sends the reply, or an error reply in its place when it would not fit in a message. */
  function respond(msg: Msg, name: string, reply: QueryReply<unknown>): void {
    let data = JSON.stringify(reply);
    const bytes = Buffer.byteLength(data);
    const max = maxPayloadOf(nc);
    if (bytes > max) {
      log.error({ query: name, bytes, maxPayload: max }, 'reply larger than max_payload');
      data = JSON.stringify({
        ok: false,
        error: {
          code: ErrorCode.Internal,
          message: `the answer to ${name} is ${bytes} bytes, more than the bus's max_payload of ${max}`,
          issues: [],
        },
      } satisfies QueryReply<never>);
    }
    try {
      msg.respond(data);
    } catch (err) {
      // E.g. the connection closing: the asker times out, the ledger goes on.
      log.error({ err, query: name }, 'reply not sent');
    }
  }
  return sub;
}
