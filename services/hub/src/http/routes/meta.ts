import { api } from '@tidemark/shared';
import { contractRoute } from '../contract-route';
import type { HubApp } from '../hub-app';

export function metaRoutes(app: HubApp): void {
  app.route({
    ...contractRoute(api.routes.health, {
      tags: ['meta'],
      summary: 'Liveness; needs no token',
      security: [],
    }),
    handler: async () => ({ status: 'ok' as const }),
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
