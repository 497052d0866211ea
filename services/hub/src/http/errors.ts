// The one place errors become HTTP answers: `{ error, details }` with the failing field paths.
import { ErrorCode, TidemarkError, describeIssues, type FieldIssue } from '@tidemark/shared';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';

export const RETRY_AFTER_SECONDS = 5;
/** Largest request body accepted. */
export const BODY_LIMIT_BYTES = 1024 * 1024;

export interface ErrorAnswer {
  error: string;
  details: FieldIssue[];
}

/**
 * Route option `config.issuePaths`: how a route's domain field names (as in the ledger's and the
 * planner's issues, e.g. `jobId`) appear on the wire (e.g. `params.backup_id`).
 */
export interface IssuePathConfig {
  issuePaths?: Record<string, string>;
}

const wireRoots = /^(body|params|querystring|headers)(\.|$)/;

/** A domain issue path on the wire: `data.policyId` → `body.policy_id`, unless the route says otherwise. */
export function wirePath(path: string, overrides: Record<string, string> = {}): string {
  const bare = path.replace(/^data\./, '');
  if (overrides[bare] !== undefined) return overrides[bare];
  if (bare === '' || wireRoots.test(bare)) return bare;
  return `body.${bare.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`;
}

function statusOf(code: ErrorCode): number {
  switch (code) {
    case ErrorCode.Validation:
      return 400;
    case ErrorCode.NotFound:
      return 404;
    case ErrorCode.Conflict:
      return 409;
    case ErrorCode.Unavailable:
      return 503;
    case ErrorCode.Config:
    case ErrorCode.Internal:
      return 500;
    default: {
      const never: never = code;
      throw new TypeError(`unhandled error code ${String(never)}`);
    }
  }
}

type Context = 'body' | 'querystring' | 'params' | 'headers';

const contextNames: Record<Context, string> = {
  body: 'the request body is',
  querystring: 'the query string is',
  params: 'the path is',
  headers: 'the request headers are',
};

/** zod issues, as fastify-type-provider-zod hands them over, as field issues on the wire. */
function validationDetails(
  validation: { instancePath: string; keyword: string; message?: string; params: object }[],
  context: Context,
): FieldIssue[] {
  return validation.flatMap((v) => {
    const at = [context, ...v.instancePath.split('/').filter(Boolean)].join('.');
    if (v.keyword === 'unrecognized_keys') {
      const keys = (v.params as { keys?: string[] }).keys ?? [];
      return keys.map((key) => ({ path: `${at}.${key}`, message: 'unknown field' }));
    }
    const expected = (v.params as { expected?: string }).expected;
    const missing = v.keyword === 'invalid_type' && /received undefined$/.test(v.message ?? '');
    const message = missing ? `required (${expected ?? 'a value'})` : (v.message ?? 'invalid');
    return [{ path: at, message }];
  });
}

/** Fastify's own request errors (body parsing, size) in the same shape. */
function requestError(err: FastifyError): { status: number; answer: ErrorAnswer } | null {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return {
        status: 400,
        answer: {
          error: `the request body is larger than the limit of ${BODY_LIMIT_BYTES} bytes (1 MiB)`,
          details: [{ path: 'body', message: `must be at most ${BODY_LIMIT_BYTES} bytes` }],
        },
      };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return {
        status: 400,
        answer: {
          error: 'the request body must be JSON',
          details: [{ path: 'headers.content-type', message: 'must be application/json' }],
        },
      };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return {
        status: 400,
        answer: {
          error: 'the request body is not valid JSON',
          details: [{ path: 'body', message: err.message }],
        },
      };
    default:
      if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
        return { status: err.statusCode, answer: { error: err.message, details: [] } };
      }
      return null;
  }
}

export function errorHandler(
  err: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  if (hasZodFastifySchemaValidationErrors(err)) {
    const context = (err.validationContext ?? 'body') as Context;
    const details = validationDetails(err.validation, context);
    request.log.info({ details }, 'request refused: invalid');
    const error = `${contextNames[context]} invalid: ${describeIssues(details)}`;
    return reply.code(400).send({ error, details });
  }
  if (err instanceof TidemarkError) {
    const status = statusOf(err.code);
    const overrides = (request.routeOptions.config as IssuePathConfig).issuePaths;
    const details = err.issues.map((i) => ({ ...i, path: wirePath(i.path, overrides) }));
    if (status === 503) {
      request.log.warn({ err }, 'request failed: a dependency did not answer');
    } else if (status >= 500) {
      request.log.error({ err }, 'request failed');
    } else {
      request.log.info({ code: err.code, reason: err.message }, 'request refused');
    }
    if (status === 503) reply.header('retry-after', String(RETRY_AFTER_SECONDS));
    return reply.code(status).send({ error: err.message, details });
  }
  const refused = requestError(err);
  if (refused) {
    request.log.info({ code: err.code, reason: err.message }, 'request refused');
    return reply.code(refused.status).send(refused.answer);
  }
  request.log.error({ err }, 'request failed');
  return reply
    .code(500)
    .send({ error: `internal error (request ${request.id}); see the hub's log`, details: [] });
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return reply.code(404).send({
    error: `no route ${request.method} ${request.url.split('?')[0]}`,
    details: [],
  });
}
