import { commonConfigShape, parseConfig } from '@tidemark/shared';
import { z } from 'zod';

/** The only host an API without a token may listen on. */
export const LOOPBACK_HOST = '127.0.0.1';

const HubEnvSchema = z.object({
  ...commonConfigShape,
  /** TCP port of the REST API; 0 picks a free one (tests). */
  TIDEMARK_HUB_PORT: z.coerce.number().int().min(0).max(65535).default(8082),
  /**
   * Address to listen on. Default `0.0.0.0` when a token is set; without a token the API is
   * open, so it listens on 127.0.0.1 whatever this says.
   */
  TIDEMARK_HUB_HOST: z.string().trim().min(1).max(255).optional(),
  /** Bearer token every API route requires; unset (or empty) leaves the API open to loopback. */
  TIDEMARK_API_TOKEN: z
    .string()
    .max(4096)
    .optional()
    .transform((token) => (token ? token : undefined)),
  /** How long the hub waits for the ledger's answer, or a PubAck, before answering 503. */
  TIDEMARK_LEDGER_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(5000),
});

export const HubConfigSchema = HubEnvSchema.transform(({ TIDEMARK_HUB_HOST, ...rest }) => {
  const open = rest.TIDEMARK_API_TOKEN === undefined;
  const requested = TIDEMARK_HUB_HOST ?? (open ? LOOPBACK_HOST : '0.0.0.0');
  return {
    ...rest,
    /** The host the hub binds: the requested one, or 127.0.0.1 for an API without a token. */
    TIDEMARK_HUB_HOST: open ? LOOPBACK_HOST : requested,
    /** A host that was asked for but refused because no token is set; null otherwise. */
    refusedHost: open && requested !== LOOPBACK_HOST ? requested : null,
  };
});
export type HubConfig = z.output<typeof HubConfigSchema>;

export function loadConfig(env: Record<string, string | undefined> = process.env): HubConfig {
  return parseConfig(HubConfigSchema, env);
}
