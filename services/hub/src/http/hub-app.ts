import type { Logger } from '@tidemark/shared';
import type {
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';

/**
 * The hub's fastify instance, its routes typed by their zod schemas. A module of its own: the
 * route files take it as a parameter, and app.ts, which builds it, imports the route files.
 */
export type HubApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  Logger,
  ZodTypeProvider
>;
