import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Logger } from '@tidemark/shared';
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import {
  jsonSchemaTransform,
  jsonSchemaTransformObject,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Bus } from '../nats/bus';
import { requireToken } from './auth';
import { BODY_LIMIT_BYTES, errorHandler, notFoundHandler } from './errors';
import type { HubApp } from './hub-app';
import { compatibilityRoutes } from './routes/compatibility';
import { jobRoutes } from './routes/jobs';
import { metaRoutes } from './routes/meta';
import { registryRoutes } from './routes/registry';

export interface AppDeps {
  bus: Bus;
  log: Logger;
  /** Required as a bearer token on every route but health and docs; undefined: none. */
  token: string | undefined;
}

/** The REST API, ready to listen. Transport only: the work is in `jobs/` and `planning/`. */
export async function buildApp({ bus, log, token }: AppDeps): Promise<HubApp> {
  const app = Fastify({
    loggerInstance: log,
    bodyLimit: BODY_LIMIT_BYTES,
    // One line per request, written below, carrying the job id when there is one.
    logController: new LogController({ disableRequestLogging: true }),
  }).withTypeProvider<ZodTypeProvider>();

  // JSON in: a text/plain body is refused rather than handed to the routes as a string.
  app.removeContentTypeParser('text/plain');
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(errorHandler);

  // Hooks first: they apply to the routes added after them.
  if (token) app.addHook('onRequest', requireToken(token));
  app.addHook('onResponse', async (request, reply) => logCompleted(request, reply));
  app.setNotFoundHandler(notFoundHandler);

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Tidemark hub',
        version: '1',
        description:
          'Plans backups and replications of VM disks and hands them to the runners. Errors are ' +
          '`{ error, details }`; 503 answers carry `Retry-After`.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
      security: token ? [{ bearerAuth: [] }] : [],
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  const deps = { bus, log };
  metaRoutes(app);
  registryRoutes(app, deps);
  jobRoutes(app, deps);
  compatibilityRoutes(app, deps);
  return app;
}

function logCompleted(request: FastifyRequest, reply: FastifyReply): void {
  const line = {
    method: request.method,
    url: request.url,
    statusCode: reply.statusCode,
    responseTimeMs: Math.round(reply.elapsedTime),
  };
  if (request.routeOptions.url === '/healthz') request.log.debug(line, 'request completed');
  else request.log.info(line, 'request completed');
}
