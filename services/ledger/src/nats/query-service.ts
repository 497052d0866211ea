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

/**
 * Answers `ledger.<query>` requests (request/reply, queue group `ledger`, so several ledgers
 * share the load). Every request is validated; every answer is `{ ok, result | error }`.
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
      void answer(msg);
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
    if (msg.reply) msg.respond(JSON.stringify(reply));
  }
  return sub;
}
