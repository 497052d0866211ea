/**
 * The QMP client against real qemu-storage-daemon processes in a temporary directory, and a
 * fake monitor for what a healthy daemon never sends (split lines, malformed JSON).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpClient, QmpError } from '@tidemark/backup-client/qmp/client';

const dir = mkdtempSync(join(tmpdir(), 'tidemark-qmp-'));
const daemons: ChildProcess[] = [];
const clients: QmpClient[] = [];
let counter = 0;

function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once('exit', () => resolve()));
}

/** A daemon with one 16 MiB null-co node `disk0`; resolves once its monitor socket exists. */
async function startDaemon(): Promise<{ proc: ChildProcess; path: string }> {
  const path = join(dir, `qmp${counter++}.sock`);
  const proc = spawn(
    'qemu-storage-daemon',
    [
      '--blockdev',
      'driver=null-co,node-name=disk0,size=16777216',
      '--chardev',
      `socket,path=${path},server=on,wait=off,id=qmp`,
      '--monitor',
      'chardev=qmp',
    ],
    { stdio: 'ignore' },
  );
  daemons.push(proc);
  for (let i = 0; i < 200 && !existsSync(path); i++) await sleep(25);
  if (!existsSync(path)) throw new Error('qemu-storage-daemon did not create its QMP socket');
  return { proc, path };
}

async function connect(path: string): Promise<QmpClient> {
  const client = await QmpClient.connect(path, { timeoutMs: 5000 });
  clients.push(client);
  return client;
}

async function rejection(promise: Promise<unknown>): Promise<QmpError> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof QmpError)) throw new Error(`expected a QmpError, got ${String(err)}`);
  return err;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  for (const proc of daemons) {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited(proc);
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('QmpClient on qemu-storage-daemon', () => {
  let path: string;
  beforeAll(async () => {
    ({ path } = await startDaemon());
  });

  it('connects and runs query-version', async () => {
    const client = await connect(path);
    expect(client.greeting).toMatchObject({ version: { qemu: { major: expect.any(Number) } } });
    const version = await client.execute<{ qemu: { major: number; minor: number } }>(
      'query-version',
    );
    expect(version.qemu.major).toBeGreaterThanOrEqual(7);
  });

  it('turns an error reply into a QmpError with its class', async () => {
    const client = await connect(path);
    const missing = await rejection(
      client.execute('block-dirty-bitmap-remove', { node: 'disk0', name: 'nope' }),
    );
    expect(missing.command).toBe('block-dirty-bitmap-remove');
    expect(missing.errorClass).toBe('GenericError');
    expect(missing.desc).toContain('nope');
    const unknown = await rejection(client.execute('no-such-command'));
    expect(unknown.errorClass).toBe('CommandNotFound');
    // The connection is still usable after errors.
    await expect(client.execute('query-version')).resolves.toBeDefined();
  });

  it('matches replies of commands outstanding at once', async () => {
    const client = await connect(path);
    const [nodes, version, failed, jobs] = await Promise.allSettled([
      client.execute<Array<{ 'node-name': string }>>('query-named-block-nodes', { flat: true }),
      client.execute<{ qemu: { major: number } }>('query-version'),
      client.execute('block-dirty-bitmap-remove', { node: 'disk0', name: 'nope' }),
      client.execute<unknown[]>('query-jobs'),
    ]);
    expect(nodes.status === 'fulfilled' && nodes.value.map((n) => n['node-name'])).toEqual([
      'disk0',
    ]);
    expect(version.status === 'fulfilled' && version.value.qemu.major).toBeGreaterThanOrEqual(7);
    expect(failed.status === 'rejected' && failed.reason).toBeInstanceOf(QmpError);
    expect(jobs.status === 'fulfilled' && jobs.value).toEqual([]);
  });

  it('delivers events to listeners and waitForEvent', async () => {
    const client = await connect(path);
    const seen: string[] = [];
    client.on('event', (ev) => seen.push(ev.event));
    const sock = join(dir, `nbd${counter++}.sock`);
    await client.execute('nbd-server-start', { addr: { type: 'unix', data: { path: sock } } });
    await client.execute('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0' });
    const deleted = client.waitForEvent('BLOCK_EXPORT_DELETED', (ev) => {
      const data = ev.data as { id?: unknown };
      return data.id === 'e0';
    });
    await client.execute('block-export-del', { id: 'e0' });
    await expect(deleted).resolves.toMatchObject({ data: { id: 'e0' } });
    expect(seen).toContain('BLOCK_EXPORT_DELETED');
    await client.execute('nbd-server-stop');
    await expect(rejection(client.waitForEvent('NEVER', undefined, 50))).resolves.toMatchObject({
      errorClass: 'Timeout',
    });
  });
});

describe('QmpClient when the daemon dies', () => {
  it('rejects pending commands and waiters with Closed', async () => {
    const { proc, path } = await startDaemon();
    const client = await connect(path);
    proc.kill('SIGSTOP'); // so the commands below stay pending
    // rejection() attaches a handler at once: none of these rejects unhandled meanwhile.
    const pending = [client.execute('query-version'), client.execute('query-jobs')].map(rejection);
    const waiter = rejection(client.waitForEvent('SHUTDOWN'));
    await sleep(100);
    proc.kill('SIGKILL');
    await exited(proc);
    for (const err of await Promise.all(pending)) expect(err.errorClass).toBe('Closed');
    expect((await waiter).errorClass).toBe('Closed');
    await expect(rejection(client.execute('query-version'))).resolves.toMatchObject({
      command: 'query-version',
      errorClass: 'Closed',
    });
  });

  it('fails to connect to a missing socket with Closed', async () => {
    const err = await rejection(QmpClient.connect(join(dir, 'missing.sock')));
    expect(err.errorClass).toBe('Closed');
  });
});

describe('QmpClient against a fake monitor', () => {
  let server: Server;
  let path: string;
  /** What the fake sends after the client's `qmp_capabilities`. */
  let afterCapabilities: (reply: (text: string) => void) => void;

  beforeAll(async () => {
    path = join(dir, `fake${counter++}.sock`);
    server = createServer((socket) => {
      socket.on('error', () => undefined);
      // The greeting in pieces, to exercise partial lines.
      socket.write('{"QMP": {"version": {"qemu": ');
      setTimeout(() => socket.write('{"major": 7}}, "capabilities": []}}\r\n'), 20);
      let buffered = '';
      socket.on('data', (chunk) => {
        buffered += chunk.toString('utf8');
        const nl = buffered.indexOf('\n');
        if (nl < 0) return;
        const req = JSON.parse(buffered.slice(0, nl)) as { execute: string; id: number };
        buffered = buffered.slice(nl + 1);
        if (req.execute === 'qmp_capabilities') {
          socket.write(`{"return": {}, "id": ${req.id}}\n`);
          afterCapabilities((text) => socket.write(text));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('rejects every pending command with Protocol on malformed JSON', async () => {
    let reply: (text: string) => void = () => undefined;
    afterCapabilities = (r) => (reply = r);
    const client = await connect(path);
    expect(client.greeting).toEqual({ version: { qemu: { major: 7 } }, capabilities: [] });
    const pending = [client.execute('query-version'), client.execute('query-jobs')].map(rejection);
    reply('{"event": "X", "data": {}, "timestamp": {}}\n{"return": oops}\n');
    for (const err of await Promise.all(pending)) expect(err.errorClass).toBe('Protocol');
  });

  it('times out when no greeting comes', async () => {
    const silent = createServer(() => undefined);
    const silentPath = join(dir, `silent${counter++}.sock`);
    await new Promise<void>((resolve) => silent.listen(silentPath, resolve));
    try {
      const err = await rejection(QmpClient.connect(silentPath, { timeoutMs: 100 }));
      expect(err.errorClass).toBe('Timeout');
    } finally {
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
