import { z } from 'zod';
import type { HubApp } from '../hub-app';

export function metaRoutes(app: HubApp): void {
  app.get(
    '/healthz',
    {
      schema: {
        tags: ['meta'],
        summary: 'Liveness; needs no token',
        security: [],
        response: { 200: z.object({ status: z.literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
