// The only place the CLI reads its environment: flags win over variables, variables over defaults.
import { UsageError } from './errors';

export const DEFAULT_HUB_URL = 'http://127.0.0.1:8082';

export interface CliConfig {
  /** Hub base URL. */
  url: string;
  /** API token; undefined when none is set (the hub may not require one). */
  token: string | undefined;
  /** Print the API's JSON instead of tables. */
  json: boolean;
}

/** The global flags as commander hands them over. */
export interface GlobalFlags {
  url?: string;
  token?: string;
  json?: boolean;
}

export function resolveConfig(
  flags: GlobalFlags,
  env: Record<string, string | undefined> = process.env,
): CliConfig {
  const url = flags.url || env.TIDEMARK_URL || DEFAULT_HUB_URL;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`hub URL ${JSON.stringify(url)} is not a URL (--url or TIDEMARK_URL)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new UsageError(`hub URL ${JSON.stringify(url)} must start with http:// or https://`);
  }
  return {
    url,
    token: flags.token || env.TIDEMARK_API_TOKEN || undefined,
    json: flags.json === true,
  };
}
