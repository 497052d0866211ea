import { Writable } from 'node:stream';
import { createLogger, type Logger, type TidemarkEvent } from '@tidemark/shared';
import { HubConfigSchema } from '@tidemark/hub/config';
import { startHub, type Hub } from '@tidemark/hub/hub';
import { uniqueName } from './env';
import { createLedgerWorld, type LedgerWorld } from './ledger-harness';

export interface HubAnswer<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
}

export interface CallOptions {
  /** Sent as `Authorization: Bearer <token>`; default the hub's own token, `null` for none. */
  token?: string | null;
  /** Sent as is instead of `JSON.stringify(body)`. */
  rawBody?: string;
  headers?: Record<string, string>;
}

/** A hub on a random port, talking to a ledger world's bus; HTTP through a real socket. */
export interface TestHub {
  hub: Hub;
  url: string;
  /** Every line the hub logged, parsed. */
  logLines: Record<string, unknown>[];
  call<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    opts?: CallOptions,
  ): Promise<HubAnswer<T>>;
  close(): Promise<void>;
}

export async function startTestHub(
  world: LedgerWorld,
  env: Record<string, string> = {},
): Promise<TestHub> {
  const config = HubConfigSchema.parse({
    TIDEMARK_NATS_URL: world.env.TIDEMARK_NATS_URL,
    TIDEMARK_BUS_PREFIX: world.env.TIDEMARK_BUS_PREFIX,
    TIDEMARK_HUB_PORT: '0',
    TIDEMARK_LOG_LEVEL: process.env.TIDEMARK_TEST_HUB_LOG_LEVEL ?? 'info',
    ...env,
  });
  const logLines: Record<string, unknown>[] = [];
  const log: Logger = createLogger(
    'hub',
    config.TIDEMARK_LOG_LEVEL,
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (line) logLines.push(JSON.parse(line) as Record<string, unknown>);
        }
        done();
      },
    }),
  );
  const hub = await startHub(config, log);
  const token = config.TIDEMARK_API_TOKEN;

  return {
    hub,
    url: hub.url,
    logLines,
    async call<T>(method: string, path: string, body?: unknown, opts: CallOptions = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      const bearer = opts.token === undefined ? token : opts.token;
      if (bearer) headers.authorization = `Bearer ${bearer}`;
      const payload = opts.rawBody ?? (body === undefined ? undefined : JSON.stringify(body));
      if (payload !== undefined) headers['content-type'] ??= 'application/json';
      const res = await fetch(`${hub.url}${path}`, { method, headers, body: payload });
      const text = await res.text();
      return {
        status: res.status,
        headers: res.headers,
        body: (text ? JSON.parse(text) : undefined) as T,
      };
    },
    close: () => hub.close(),
  };
}

/** Registers a VM with the given disks through the API; returns its name. */
export async function registerVm(
  hub: TestHub,
  diskKeys: string[] = ['disk-0'],
  vmName = uniqueName('vm'),
): Promise<string> {
  const res = await hub.call('POST', '/api/v1/vms', {
    vm_name: vmName,
    disks: diskKeys.map((disk_key) => ({
      disk_key,
      driver: 'qemu',
      path: `/var/lib/vms/${vmName}/${disk_key}.qcow2`,
    })),
  });
  if (res.status !== 201) throw new Error(`registering ${vmName}: ${JSON.stringify(res.body)}`);
  return vmName;
}

/** Creates a repository through the API. */
export async function createRepository(
  hub: TestHub,
  path = '/srv/tidemark',
): Promise<{ id: string; path: string }> {
  const res = await hub.call<{ id: string; path: string }>('POST', '/api/v1/repositories', {
    name: uniqueName('repo'),
    path,
  });
  if (res.status !== 201) throw new Error(`creating a repository: ${JSON.stringify(res.body)}`);
  return res.body;
}

/** Messages stored in the world's event stream so far. */
export async function streamCount(world: LedgerWorld): Promise<number> {
  return (await world.jsm.streams.info(world.topo.stream)).state.messages;
}

/** The last `backup.start` stored in the world's stream, with its Nats-Msg-Id. */
export async function lastStart(
  world: LedgerWorld,
): Promise<{ msgId: string | undefined; event: TidemarkEvent<'backup.start'> }> {
  const m = await world.jsm.streams.getMessage(world.topo.stream, {
    last_by_subj: world.topo.subjectFor('backup.start'),
  });
  if (!m) throw new Error('no backup.start in the stream');
  return { msgId: m.header?.get('Nats-Msg-Id'), event: m.json<TidemarkEvent<'backup.start'>>() };
}

/** What a hub suite shares: set in its beforeAll, closed in its afterAll (see `hubSuite`). */
export interface HubSuite {
  world: LedgerWorld;
  hub: TestHub;
  repo: { id: string; path: string };
}

/**
 * For a describe block: its own ledger world with the ledger running, a hub on it and one
 * repository at `repoPath`; all closed after the block.
 */
export function hubSuite(repoPath?: string): HubSuite {
  const suite = {} as HubSuite;
  beforeAll(async () => {
    suite.world = await createLedgerWorld();
    await suite.world.startLedger();
    suite.hub = await startTestHub(suite.world);
    suite.repo = await createRepository(suite.hub, repoPath);
  });
  afterAll(async () => {
    await suite.hub?.close();
    await suite.world?.close();
  });
  return suite;
}
