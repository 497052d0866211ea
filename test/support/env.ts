import { randomBytes } from 'node:crypto';

/** Servers the suites talk to: set by global-setup (containers) or by the developer. */
export function testServers(): { natsUrl: string; mysqlUrl: string } {
  const natsUrl = process.env.TIDEMARK_TEST_NATS_URL;
  const mysqlUrl = process.env.TIDEMARK_TEST_MYSQL_URL;
  if (!natsUrl || !mysqlUrl) {
    throw new Error(
      'TIDEMARK_TEST_NATS_URL and TIDEMARK_TEST_MYSQL_URL are not set: run the suites through jest (global-setup starts the servers)',
    );
  }
  return { natsUrl, mysqlUrl };
}

/** A short random name, so each test gets its own stream, subjects and database. */
export function uniqueName(prefix: string): string {
  return `${prefix}${randomBytes(5).toString('hex')}`;
}

/** The MySQL URL with another database name. */
export function withDatabase(mysqlUrl: string, database: string): string {
  const u = new URL(mysqlUrl);
  u.pathname = `/${database}`;
  return u.toString();
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false>,
  timeoutMs = 15000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A TCP port free on this machine right now (for a server that must keep its address). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
