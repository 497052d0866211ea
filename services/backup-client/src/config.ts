import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChangeId, commonConfigShape, JobId, parseConfig } from '@tidemark/shared';
import { z } from 'zod';
import { DEFAULT_CANARY, type CanaryOptions } from './copy/canary';
import { ClientEnv } from './protocol';

/** Bytes of a Unix socket path (sockaddr_un.sun_path on Linux, less its NUL). */
const SUN_PATH_MAX = 107;
/** Room the client's sockets need below its work directory (`/live-<tag>.sock` and the like). */
const SOCKET_NAME_ROOM = 48;

/**
 * Where the client's work directory goes: the one asked for (else the system temp dir), unless
 * its sockets would not fit a Unix socket path there (qemu-nbd refuses them: "too long"); then
 * the system temp dir, or /tmp.
 */
export function socketSafeBase(wanted: string | undefined): string {
  const fits = (dir: string) =>
    Buffer.byteLength(join(dir, 'tidemark-client-XXXXXX')) + SOCKET_NAME_ROOM <= SUN_PATH_MAX;
  return [wanted, tmpdir(), '/tmp'].find((d): d is string => !!d && fits(d)) ?? '/tmp';
}

/** An empty variable is an unset one, as `VAR= command` means in a shell. */
const unsetIfEmpty = <S extends z.ZodType>(schema: S) =>
  z.preprocess((v) => (v === '' ? undefined : v), schema);

/**
 * Previous change_ids: a JSON object by disk key, or one change_id (for a one-disk job; the
 * job file decides whether it fits).
 */
type ChangeIds = { one: string } | { byDisk: Record<string, string | null> };
const PreviousChangeIds = z.string().transform((raw, ctx): ChangeIds => {
  const trimmed = raw.trim();
  if (!trimmed.startsWith('{')) {
    const one = ChangeId.safeParse(trimmed);
    if (one.success) return { one: one.data };
    for (const issue of one.error.issues) ctx.addIssue({ code: 'custom', message: issue.message });
    return z.NEVER;
  }
  let json: unknown;
  try {
    json = JSON.parse(trimmed);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'starts with "{" but is not JSON' });
    return z.NEVER;
  }
  const byDisk = z.record(z.string(), ChangeId.nullable()).safeParse(json);
  if (byDisk.success) return { byDisk: byDisk.data };
  for (const issue of byDisk.error.issues)
    ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path });
  return z.NEVER;
});
export type PreviousChangeIds = z.output<typeof PreviousChangeIds>;

const whole = (min: number, max: number, extra?: { multipleOf: number }) => {
  const n = z.coerce
    .number({ error: `must be a whole number from ${min} to ${max}` })
    .int(`must be a whole number from ${min} to ${max}`)
    .min(min, `must be from ${min} to ${max}`)
    .max(max, `must be from ${min} to ${max}`);
  return unsetIfEmpty(
    (extra
      ? n.multipleOf(extra.multipleOf, `must be a multiple of ${extra.multipleOf}`)
      : n
    ).optional(),
  );
};

const kib = (n: number | undefined) => (n === undefined ? undefined : n * 1024);
/** MB = 10^6 bytes. */
const mb = (n: number | undefined) => (n === undefined ? undefined : n * 1e6);

const ClientEnvSchema = z.object({
  [ClientEnv.JobId]: unsetIfEmpty(JobId.optional()),
  [ClientEnv.PreviousChangeId]: unsetIfEmpty(PreviousChangeIds.optional()),
  [ClientEnv.WorkDir]: unsetIfEmpty(z.string().optional()),
  [ClientEnv.ExitWithParent]: z.string().optional(),
  [ClientEnv.ProgressIntervalMs]: whole(1, 3_600_000),
  [ClientEnv.CopyMaxMbps]: unsetIfEmpty(
    z.coerce
      .number({ error: 'must be a number above 0' })
      .gt(0, 'must be a number above 0')
      .max(100_000, 'must be at most 100000')
      .optional(),
  ),
  [ClientEnv.CopyChunkKib]: whole(64, 32768, { multipleOf: 64 }),
  [ClientEnv.CopyInFlight]: whole(1, 256),
  [ClientEnv.CanaryBlocks]: whole(0, 65536),
  [ClientEnv.CanaryBlockKib]: whole(4, 4096),
  [ClientEnv.CanarySeed]: whole(0, 2 ** 32 - 1),
  TIDEMARK_LOG_LEVEL: unsetIfEmpty(commonConfigShape.TIDEMARK_LOG_LEVEL),
});

/** The client's configuration, from its environment. */
export const ClientConfigSchema = ClientEnvSchema.transform((env) => ({
  /** The job the copy belongs to; only `backup` needs it, and refuses to start without it. */
  jobId: env[ClientEnv.JobId],
  /** Previous change_ids to apply to the job's disks (they must agree with the job file). */
  previousChangeIds: env[ClientEnv.PreviousChangeId],
  /** Where every command makes its work directory (sockets, fleece overlays). */
  workBase: socketSafeBase(env[ClientEnv.WorkDir]),
  /** Started by a runner: stop when stdin closes, wait for its commit after a completed result. */
  underRunner: env[ClientEnv.ExitWithParent] === '1',
  progressIntervalMs: env[ClientEnv.ProgressIntervalMs] ?? 1000,
  /** Copy tuning; unset ones keep the copier's defaults. */
  copy: {
    chunkSize: kib(env[ClientEnv.CopyChunkKib]),
    inFlight: env[ClientEnv.CopyInFlight],
    maxBytesPerSecond: mb(env[ClientEnv.CopyMaxMbps]),
  },
  /** The CBT canary of each incremental disk; unset ones keep its defaults. */
  canary: canary(env),
  logLevel: env.TIDEMARK_LOG_LEVEL,
}));

function canary(env: z.output<typeof ClientEnvSchema>): CanaryOptions {
  const seed = env[ClientEnv.CanarySeed];
  return {
    blocks: env[ClientEnv.CanaryBlocks] ?? DEFAULT_CANARY.blocks,
    blockSize: kib(env[ClientEnv.CanaryBlockKib]) ?? DEFAULT_CANARY.blockSize,
    ...(seed === undefined ? {} : { seed }),
  };
}
export type ClientConfig = z.output<typeof ClientConfigSchema>;

/** Parses the environment once; a ConfigError names every bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): ClientConfig {
  return parseConfig(ClientConfigSchema, env);
}
