import type { AddressInfo } from 'node:net';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { busTopology, natsConnectOptions, redactUrl, type Logger } from '@tidemark/shared';
import type { HubConfig } from './config';
import { buildApp } from './http/app';
import type { HubApp } from './http/hub-app';
import { createBus } from './nats/bus';

export interface Hub {
  /** Where the API answers, e.g. `http://127.0.0.1:8082`. */
  url: string;
  close(): Promise<void>;
}

/** Connects to NATS and serves the REST API until `close()`. */
export async function startHub(config: HubConfig, log: Logger): Promise<Hub> {
  const topo = busTopology(config.TIDEMARK_BUS_PREFIX);
  const host = config.TIDEMARK_HUB_HOST;
  const token = config.TIDEMARK_API_TOKEN;
  if (!token) {
    log.warn(
      { host, refusedHost: config.refusedHost },
      config.refusedHost
        ? `TIDEMARK_API_TOKEN is not set: the API is open, so it listens on ${host} only, not on ${config.refusedHost}`
        : `TIDEMARK_API_TOKEN is not set: the API is open, so it listens on ${host} only`,
    );
  }

  const nc = await connect(natsConnectOptions(config, 'tidemark-hub'));
  const bus = createBus({
    nc,
    js: jetstream(nc),
    topo,
    timeoutMs: config.TIDEMARK_LEDGER_TIMEOUT_MS,
    log,
  });

  let app: HubApp;
  try {
    app = await buildApp({ bus, log, token });
    await app.listen({ host, port: config.TIDEMARK_HUB_PORT });
  } catch (err) {
    await nc.close();
    throw err;
  }
  const { port } = app.server.address() as AddressInfo;
  const url = `http://${reachableHost(host)}:${port}`;
  log.info(
    {
      url,
      host,
      port,
      nats: redactUrl(config.TIDEMARK_NATS_URL),
      stream: topo.stream,
      auth: token ? 'bearer token' : 'none',
    },
    'hub ready',
  );

  return {
    url,
    async close() {
      await app.close();
      await nc.close();
      log.info('hub stopped');
    },
  };
}

/** A host a client on this machine can connect to: a wildcard address is not one. */
function reachableHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
