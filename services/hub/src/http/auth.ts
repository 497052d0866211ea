import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ErrorAnswer } from './errors';

/** Routes anyone may call: health, and the API's own description. */
function isOpen(request: FastifyRequest): boolean {
  if (request.method !== 'GET' && request.method !== 'HEAD') return false;
  // The matched route, not the raw URL, so no spelling of a path slips past.
  const route = request.routeOptions.url;
  return route === '/healthz' || route === '/openapi.json' || /^\/docs(\/|$)/.test(route ?? '');
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * An onRequest hook requiring `Authorization: Bearer <token>` on every route but the open ones.
 * The token is compared in constant time and never logged.
 */
export function requireToken(token: string) {
  const expected = digest(token);
  return async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | void> => {
    if (isOpen(request)) return;
    const header = request.headers.authorization;
    const presented = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1];
    if (presented !== undefined && timingSafeEqual(digest(presented), expected)) return;
    const answer: ErrorAnswer = {
      error: header ? 'the API token is not valid' : 'this route needs an API token',
      details: [
        {
          path: 'headers.authorization',
          message: header ? 'wrong token' : 'expected "Bearer <token>"',
        },
      ],
    };
    request.log.info({ reason: answer.details[0].message }, 'request refused: unauthorized');
    return reply.code(401).header('www-authenticate', 'Bearer').send(answer);
  };
}
