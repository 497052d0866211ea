import { z } from 'zod';
import { ConfigError, describeIssues } from './errors';
import { toFieldIssues } from './validate';

/**
 * Parses the environment once at start-up. Every bad variable is named in one error, so an
 * operator fixes them all in one go rather than one per restart.
 */
export function parseConfig<S extends z.ZodType>(
  schema: S,
  env: Record<string, string | undefined>,
): z.output<S> {
  const result = schema.safeParse(env);
  if (result.success) return result.data;
  const issues = toFieldIssues(result.error);
  throw new ConfigError(`invalid configuration: ${describeIssues(issues)}`, issues);
}

const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Variables every service shares. */
export const commonConfigShape = {
  TIDEMARK_NATS_URL: z.url({ protocol: /^(nats|tls|wss?)$/ }).default('nats://127.0.0.1:4222'),
  TIDEMARK_LOG_LEVEL: z.enum(logLevels).default('info'),
  /**
   * The service's own NATS user (infra/nats/secure.conf gives each service one, with only the
   * subjects it needs); unset for a server without authorization.
   */
  TIDEMARK_NATS_USER: z.string().min(1).max(128).optional(),
  TIDEMARK_NATS_PASSWORD: z.string().min(1).max(1024).optional(),
  /** TLS: the CA that signed the server's certificate (enables TLS), and a client certificate. */
  TIDEMARK_NATS_TLS_CA: z.string().min(1).optional(),
  TIDEMARK_NATS_TLS_CERT: z.string().min(1).optional(),
  TIDEMARK_NATS_TLS_KEY: z.string().min(1).optional(),
  /** Prefix of every Tidemark stream and subject; tests use a random one to stay apart. */
  TIDEMARK_BUS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]*$/, 'only letters, digits, "_" and "-"')
    .max(32)
    .default(''),
};
