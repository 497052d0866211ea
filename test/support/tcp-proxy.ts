/**
 * A TCP proxy the chaos suite puts between one service and a server (one runner and NATS), so
 * that it can partition that service alone: `cut()` ends every connection through it and
 * refuses new ones until `restore()`. The service sees what a lost network looks like to it:
 * its connection drops and every reconnect fails, while everything else goes on.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  /** The port it listens on (127.0.0.1). */
  port: number;
  /** Ends every connection through the proxy and refuses new ones. */
  cut(): void;
  /** Lets connections through again. */
  restore(): void;
  /** Whether the proxy is cut now. */
  isCut(): boolean;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  let cut = false;
  const pairs = new Set<[Socket, Socket]>();
  const server: Server = createServer((client) => {
    if (cut) {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect(target);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    // Either side ending or failing ends both: the service sees its connection lost.
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of pair) s.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as { port: number };
  const dropAll = () => {
    for (const [client, upstream] of pairs) {
      client.resetAndDestroy();
      upstream.destroy();
    }
    pairs.clear();
  };
  return {
    port,
    cut() {
      cut = true;
      dropAll();
    },
    restore() {
      cut = false;
    },
    isCut: () => cut,
    async close() {
      dropAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
