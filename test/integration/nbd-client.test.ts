/**
 * The NBD client against real qemu-nbd servers on qcow2 images in a temporary directory.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AllocationFlag, DIRTY_FLAG, NbdClient, NbdError } from '@tidemark/backup-client/nbd/index';
import { freePort } from '../support/env';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'tidemark-nbd-'));
const servers: ChildProcess[] = [];
let socketCounter = 0;

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
}

async function serve(image: string, args: string[]): Promise<{ path: string; proc: ChildProcess }> {
  const path = join(dir, `s${socketCounter++}.sock`);
  const proc = spawn('qemu-nbd', [`--socket=${path}`, '--format=qcow2', ...args, image], {
    stdio: 'ignore',
  });
  servers.push(proc);
  for (let i = 0; i < 200 && !existsSync(path); i++) await sleep(25);
  if (!existsSync(path)) throw new Error('qemu-nbd did not create its socket');
  return { path, proc };
}

function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once('exit', () => resolve()));
}

function makeImage(name: string, size = '16M'): string {
  const image = join(dir, name);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', image, size]);
  return image;
}

afterAll(async () => {
  for (const proc of servers) {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited(proc);
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('NbdClient on a read-only export', () => {
  let client: NbdClient;
  beforeAll(async () => {
    const image = makeImage('ro.qcow2', '48M');
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 1M 64k', image]);
    const { path } = await serve(image, ['-r', '-t']);
    client = await NbdClient.connect(
      { path },
      { exportName: '', metaContexts: ['base:allocation'] },
    );
  });
  afterAll(() => client.disconnect());

  it('reports the size and the read-only flag', () => {
    expect(client.size).toBe(48 * MiB);
    expect(client.readOnly).toBe(true);
  });

  it('reads data and holes', async () => {
    const data = await client.read(1 * MiB, 64 * 1024);
    expect(data.equals(Buffer.alloc(64 * 1024, 0x5a))).toBe(true);
    const hole = await client.read(4 * MiB, 128 * 1024);
    expect(hole.equals(Buffer.alloc(128 * 1024))).toBe(true);
    const across = await client.read(1 * MiB - 512, 1024);
    expect(across.subarray(0, 512).equals(Buffer.alloc(512))).toBe(true);
    expect(across.subarray(512).equals(Buffer.alloc(512, 0x5a))).toBe(true);
  });

  it('shows the data extent apart from the holes in base:allocation', async () => {
    const status = await client.blockStatus(0, client.size);
    const extents = status.get('base:allocation') ?? [];
    let at = 0;
    const data: Array<[number, number]> = [];
    for (const e of extents) {
      if (!(e.flags & AllocationFlag.HOLE)) data.push([at, e.length]);
      at += e.length;
    }
    expect(at).toBeGreaterThan(0);
    expect(data).toEqual([[1 * MiB, 64 * 1024]]);
  });

  it('completes 32 requests in flight', async () => {
    const reads = Array.from({ length: 32 }, (_, i) => client.read(1 * MiB + i * 2048, 2048));
    const results = await Promise.all(reads);
    for (const r of results) expect(r.equals(Buffer.alloc(2048, 0x5a))).toBe(true);
  });

  it('splits a read larger than the server maximum', async () => {
    expect(client.info.maxRequestSize).toBeLessThanOrEqual(32 * MiB);
    const data = await client.read(0, 40 * MiB);
    expect(data.length).toBe(40 * MiB);
    expect(data.subarray(1 * MiB, 1 * MiB + 64 * 1024).equals(Buffer.alloc(64 * 1024, 0x5a))).toBe(
      true,
    );
  });

  it('rejects a read past the end with the server errno', async () => {
    const err = await client.read(client.size - 512, 4096).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdError);
    expect((err as NbdError).code).toBe('SERVER');
    expect((err as NbdError).errno).toBeGreaterThan(0);
    // the connection survives a server error
    expect((await client.read(1 * MiB, 512)).equals(Buffer.alloc(512, 0x5a))).toBe(true);
  });
});

describe('NbdClient over TCP', () => {
  it('connects to a qemu-nbd listening on a TCP port and reads what was written', async () => {
    const image = makeImage('tcp.qcow2');
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x3c 0 128k', image]);
    const port = await freePort();
    const proc = spawn(
      'qemu-nbd',
      ['--bind=127.0.0.1', `--port=${port}`, '--format=qcow2', '-r', '-t', image],
      { stdio: 'ignore' },
    );
    servers.push(proc);
    let client: NbdClient | undefined;
    for (let i = 0; i < 200 && !client; i++) {
      client = await NbdClient.connect({ host: '127.0.0.1', port }, { exportName: '' }).catch(
        () => undefined,
      );
      if (!client) await sleep(25);
    }
    if (!client) throw new Error('qemu-nbd did not listen on TCP');
    expect((await client.read(0, 128 * 1024)).equals(Buffer.alloc(128 * 1024, 0x3c))).toBe(true);
    await client.disconnect();
  });
});

describe('NbdClient on a writable export', () => {
  it('writes, writes zeroes, flushes and reads back', async () => {
    const image = makeImage('rw.qcow2');
    const { path } = await serve(image, ['-t']);
    const client = await NbdClient.connect({ path }, { exportName: '' });
    expect(client.readOnly).toBe(false);
    const pattern = Buffer.alloc(256 * 1024);
    for (let i = 0; i < pattern.length; i++) pattern[i] = i % 251;
    await client.write(2 * MiB, pattern);
    expect((await client.read(2 * MiB, pattern.length)).equals(pattern)).toBe(true);
    await client.writeZeroes(2 * MiB + 64 * 1024, 64 * 1024);
    const back = await client.read(2 * MiB, pattern.length);
    expect(back.subarray(64 * 1024, 128 * 1024).equals(Buffer.alloc(64 * 1024))).toBe(true);
    expect(back.subarray(0, 64 * 1024).equals(pattern.subarray(0, 64 * 1024))).toBe(true);
    await client.flush();
    await client.disconnect();
  });

  it('marks the written range dirty in a persistent bitmap', async () => {
    const image = makeImage('bitmap.qcow2');
    run('qemu-img', ['bitmap', '--add', image, 'b0']);
    const writable = await serve(image, []);
    const writer = await NbdClient.connect({ path: writable.path }, { exportName: '' });
    await writer.write(3 * MiB, Buffer.alloc(64 * 1024, 0x11));
    await writer.flush();
    await writer.disconnect();
    await exited(writable.proc); // without -t qemu-nbd leaves when its client does

    const { path } = await serve(image, ['-r', '-t', '-B', 'b0']);
    const client = await NbdClient.connect(
      { path },
      { exportName: '', metaContexts: ['qemu:dirty-bitmap:b0'] },
    );
    const extents = (await client.blockStatus(0, client.size)).get('qemu:dirty-bitmap:b0') ?? [];
    let at = 0;
    const dirty: Array<[number, number]> = [];
    for (const e of extents) {
      if (e.flags & DIRTY_FLAG) dirty.push([at, e.length]);
      at += e.length;
    }
    expect(dirty.length).toBe(1);
    const [start, length] = dirty[0] as [number, number];
    expect(start).toBeLessThanOrEqual(3 * MiB);
    expect(start + length).toBeGreaterThanOrEqual(3 * MiB + 64 * 1024);
    await client.disconnect();
  });
});

describe('NbdClient when the server dies', () => {
  it('rejects pending requests with CLOSED and does not crash', async () => {
    const image = makeImage('dies.qcow2', '64M');
    const { path, proc } = await serve(image, ['-r', '-t']);
    const client = await NbdClient.connect({ path }, { exportName: '', maxInFlight: 4 });
    const reads = Array.from({ length: 32 }, (_, i) => client.read((i % 16) * 4 * MiB, 4 * MiB));
    proc.kill('SIGKILL');
    const results = await Promise.allSettled(reads);
    const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(rejected.length).toBeGreaterThan(0);
    for (const r of rejected) {
      expect(r.reason).toBeInstanceOf(NbdError);
      expect((r.reason as NbdError).code).toBe('CLOSED');
    }
    await expect(client.read(0, 512)).rejects.toMatchObject({ code: 'CLOSED' });
  });
});

describe('NbdClient against an injected fault (nbdkit error filter)', () => {
  it('turns a server EIO into an NbdError with errno 5 and keeps the connection', async () => {
    const path = join(dir, 'nbdkit.sock');
    const proc = spawn(
      'nbdkit',
      [
        '-f',
        '--exit-with-parent',
        '-U',
        path,
        '--filter=error',
        'memory',
        '1M',
        'error-pread=EIO',
        'error-pread-rate=100%',
      ],
      { stdio: 'ignore' },
    );
    servers.push(proc);
    for (let i = 0; i < 200 && !existsSync(path); i++) await sleep(25);
    const client = await NbdClient.connect({ path }, { exportName: '' });
    await expect(client.read(0, 4096)).rejects.toMatchObject({
      name: 'NbdError',
      code: 'SERVER',
      errno: 5,
    });
    await client.write(0, Buffer.alloc(512, 1));
    await client.disconnect();
  });
});

/**
 * No real server sends a malformed reply, so this one is a scripted NBD server: a correct
 * handshake, then a reply with a bad magic to the first request.
 */
function startMalformedServer(
  path: string,
  reply: (request: Buffer) => Buffer = () => Buffer.alloc(20, 0xee),
): Promise<() => Promise<void>> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    let buffered = Buffer.alloc(0);
    let stage: 'flags' | 'options' | 'transmission' = 'flags';
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(0x4e42444d41474943n, 0);
    greeting.writeBigUInt64BE(0x49484156454f5054n, 8);
    greeting.writeUInt16BE(3, 16);
    socket.write(greeting);
    const optionReply = (option: number, type: number, data: Buffer): Buffer => {
      const h = Buffer.alloc(20);
      h.writeBigUInt64BE(0x0003e889045565a9n, 0);
      h.writeUInt32BE(option, 8);
      h.writeUInt32BE(type, 12);
      h.writeUInt32BE(data.length, 16);
      return Buffer.concat([h, data]);
    };
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      for (;;) {
        if (stage === 'flags') {
          if (buffered.length < 4) return;
          buffered = buffered.subarray(4);
          stage = 'options';
        } else if (stage === 'options') {
          if (buffered.length < 16) return;
          const option = buffered.readUInt32BE(8);
          const length = buffered.readUInt32BE(12);
          if (buffered.length < 16 + length) return;
          buffered = buffered.subarray(16 + length);
          if (option === 7) {
            const info = Buffer.alloc(12);
            info.writeUInt16BE(0, 0);
            info.writeBigUInt64BE(BigInt(MiB), 2);
            info.writeUInt16BE(1 | 2, 10);
            socket.write(optionReply(option, 3, info));
            stage = 'transmission';
          }
          socket.write(optionReply(option, 1, Buffer.alloc(0)));
        } else {
          if (buffered.length < 28) return;
          const request = buffered.subarray(0, 28);
          buffered = buffered.subarray(28);
          socket.write(reply(request));
        }
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(path, () =>
      resolve(async () => {
        for (const s of sockets) s.destroy();
        await new Promise((r) => server.close(r));
      }),
    ),
  );
}

describe('NbdClient against a malformed reply', () => {
  it('ends the connection with a PROTOCOL error and rejects every pending request', async () => {
    const stop = await startMalformedServer(join(dir, 'malformed.sock'));
    try {
      const client = await NbdClient.connect(
        { path: join(dir, 'malformed.sock') },
        { exportName: '' },
      );
      const reads = await Promise.allSettled([
        client.read(0, 512),
        client.read(512, 512),
        client.read(1024, 512),
      ]);
      for (const r of reads) {
        expect(r.status).toBe('rejected');
        expect((r as PromiseRejectedResult).reason).toBeInstanceOf(NbdError);
      }
      expect((reads[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'PROTOCOL' });
      expect(client.closed).toBe(true);
    } finally {
      await stop();
    }
  });

  it('rejects a read whose reply covers less than asked, instead of returning stale memory', async () => {
    const path = join(dir, 'short.sock');
    const stop = await startMalformedServer(path, (request) => {
      // One data chunk of 256 bytes, flagged DONE, for a 512-byte read.
      const h = Buffer.alloc(20 + 8 + 256, 0x77);
      h.writeUInt32BE(0x668e33ef, 0);
      h.writeUInt16BE(1, 4); // DONE
      h.writeUInt16BE(1, 6); // OFFSET_DATA
      request.copy(h, 8, 8, 16); // cookie
      h.writeUInt32BE(8 + 256, 16);
      h.writeBigUInt64BE(request.readBigUInt64BE(16), 20);
      return h;
    });
    try {
      const client = await NbdClient.connect({ path }, { exportName: '' });
      await expect(client.read(0, 512)).rejects.toMatchObject({
        code: 'PROTOCOL',
        message: expect.stringMatching(/covered 256 of 512 bytes/) as unknown,
      });
      expect(client.closed).toBe(true);
    } finally {
      await stop();
    }
  });
});
