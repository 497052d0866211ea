import type { FastifyBaseLogger } from 'fastify';

/**
 * From here on, every line about this request (the error handler's and the closing "request
 * completed" too) carries `jobId`. Code in `jobs/` binds it itself: hand it the logger from
 * before this call, or the id would appear twice on its lines.
 */
export function tagJob<L extends FastifyBaseLogger>(request: { log: L }, jobId: string): void {
  request.log = request.log.child({ jobId }) as L;
}
