import pino, { type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/** Keys whose values never reach a log line, wherever they appear (two levels deep). */
const secretKeys = [
  'password',
  'token',
  'secret',
  'authorization',
  'apiToken',
  'credentials',
  'pass',
];
export const redactPaths = secretKeys.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]);

/** Replaces the password of a URL (e.g. `mysql://root:pw@host/db`) with `***`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]+):[^@/]*@/, '//$1:***@');
  }
}

/**
 * The one way services log: JSON lines with `service` on each, secrets redacted. Lines about a
 * job come from `forJob(log, jobId)` so every one of them carries `jobId`.
 */
export function createLogger(
  service: string,
  level: LoggerOptions['level'] = 'info',
  destination?: pino.DestinationStream,
): Logger {
  const opts: LoggerOptions = {
    level,
    base: { service },
    redact: { paths: redactPaths, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(opts, destination) : pino(opts);
}

export function forJob(log: Logger, jobId: string, extra: Record<string, unknown> = {}): Logger {
  return log.child({ jobId, ...extra });
}
