import type { ConnectionOptions } from '@nats-io/transport-node';

/** The NATS settings every service reads (see commonConfigShape). */
export interface NatsSettings {
  TIDEMARK_NATS_URL: string;
  TIDEMARK_NATS_USER?: string;
  TIDEMARK_NATS_PASSWORD?: string;
  TIDEMARK_NATS_TLS_CA?: string;
  TIDEMARK_NATS_TLS_CERT?: string;
  TIDEMARK_NATS_TLS_KEY?: string;
}

/**
 * How a service connects: its URL, its own user (when the server has authorization), TLS when a
 * CA is named, and reconnecting for ever (a broker restart must not end a service).
 */
export function natsConnectOptions(config: NatsSettings, name: string): ConnectionOptions {
  const options: ConnectionOptions = {
    servers: config.TIDEMARK_NATS_URL,
    name,
    maxReconnectAttempts: -1,
  };
  if (config.TIDEMARK_NATS_USER) {
    options.user = config.TIDEMARK_NATS_USER;
    options.pass = config.TIDEMARK_NATS_PASSWORD;
  }
  if (config.TIDEMARK_NATS_TLS_CA || config.TIDEMARK_NATS_TLS_CERT) {
    options.tls = {
      caFile: config.TIDEMARK_NATS_TLS_CA,
      certFile: config.TIDEMARK_NATS_TLS_CERT,
      keyFile: config.TIDEMARK_NATS_TLS_KEY,
    };
  }
  return options;
}
