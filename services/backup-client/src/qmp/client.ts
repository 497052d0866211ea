/**
 * QMP (QEMU Machine Protocol) client for the monitor of a QEMU or qemu-storage-daemon on a unix
 * socket. The wire is newline-delimited JSON: one greeting, then replies matched to commands by
 * `id`, and asynchronous events in between. Only node:net; no other dependency.
 */
import { EventEmitter } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';

export interface QmpEvent {
  event: string;
  data: unknown;
  /** `{ seconds, microseconds }` as QEMU sends it. */
  timestamp: unknown;
}

export interface QmpConnectOptions {
  /** Limit for connecting, the greeting and `qmp_capabilities`. Default 10 000 ms. */
  timeoutMs?: number;
}

export class QmpError extends Error {
  override readonly name = 'QmpError';

  constructor(
    /** The command that failed (or the event waited for). */
    readonly command: string,
    /** QEMU's class (`GenericError`, `CommandNotFound`, ...), or `Closed`, `Protocol`, `Timeout`. */
    readonly errorClass: string,
    readonly desc: string,
    options?: { cause?: unknown },
  ) {
    super(`${command}: ${errorClass}: ${desc}`, options?.cause === undefined ? undefined : options);
  }
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: QmpError) => void;
}

type QmpClientEvents = { event: [QmpEvent]; close: [QmpError] };

/** The greeting is kept in `pending` under this id; commands count up from 1. */
const GREETING_ID = 0;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  /** The greeting's `QMP` member: `{ version, capabilities }`. */
  greeting: unknown;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffer = '';
  private closedError: QmpError | undefined;

  private constructor(private readonly socket: Socket) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail('Closed', err.message, err));
    socket.on('close', () => this.fail('Closed', 'the QMP connection closed'));
  }

  /** Connects, reads the greeting and leaves capabilities negotiation with `qmp_capabilities`. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const client = new QmpClient(netConnect(path));
    const greeting = new Promise<unknown>((resolve, reject) =>
      client.pending.set(GREETING_ID, { command: 'connect', resolve, reject }),
    );
    const timer = setTimeout(
      () => client.fail('Timeout', `no QMP handshake on ${path} within ${timeoutMs} ms`),
      timeoutMs,
    );
    try {
      client.greeting = await greeting;
      await client.execute('qmp_capabilities');
      return client;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs one command; resolves its `return`, rejects with a QmpError on `error`. */
  async execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) {
      throw new QmpError(command, this.closedError.errorClass, this.closedError.desc);
    }
    const id = this.nextId++;
    const line = `${JSON.stringify({ execute: command, arguments: args, id })}\n`;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: (value) => resolve(value as T), reject });
      this.socket.write(line);
    });
  }

  /**
   * The next event called `name` that `predicate` accepts. Call it before the command that
   * causes the event: events that came earlier are not kept.
   */
  async waitForEvent(
    name: string,
    predicate?: (ev: QmpEvent) => boolean,
    timeoutMs = 30_000,
  ): Promise<QmpEvent> {
    return new Promise<QmpEvent>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      const onEvent = (ev: QmpEvent): void => {
        if (ev.event !== name) return;
        try {
          if (predicate && !predicate(ev)) return;
        } catch (err) {
          done();
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        done();
        resolve(ev);
      };
      const onClose = (err: QmpError): void => {
        done();
        reject(new QmpError(name, err.errorClass, err.desc));
      };
      const timer = setTimeout(() => {
        done();
        reject(new QmpError(name, 'Timeout', `no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      if (this.closedError) return onClose(this.closedError);
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  /** Closes the connection (the daemon keeps running); pending commands reject with `Closed`. */
  async close(): Promise<void> {
    if (this.socket.closed) return this.fail('Closed', 'the QMP client was closed');
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    this.fail('Closed', 'the QMP client was closed');
    await closed;
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (;;) {
      const nl = this.buffer.indexOf('\n');
      if (nl < 0 || this.closedError) return;
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onLine(line);
    }
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch (err) {
      return this.fail('Protocol', `malformed JSON from QMP: ${line.slice(0, 200)}`, err);
    }
    if (!isRecord(msg)) return this.fail('Protocol', `not a JSON object: ${line.slice(0, 200)}`);
    if ('QMP' in msg) {
      const greeting = this.pending.get(GREETING_ID);
      this.pending.delete(GREETING_ID);
      return greeting?.resolve(msg.QMP);
    }
    if (typeof msg.event === 'string') {
      const ev: QmpEvent = { event: msg.event, data: msg.data, timestamp: msg.timestamp };
      try {
        this.emit('event', ev);
      } catch (err) {
        // A listener's fault, not the protocol's: surface it without leaving this handler.
        process.nextTick(() => {
          throw err;
        });
      }
      return;
    }
    const id = typeof msg.id === 'number' ? msg.id : undefined;
    const p = id === undefined || id === GREETING_ID ? undefined : this.pending.get(id);
    if (id === undefined || !p) {
      return this.fail('Protocol', `QMP reply with no known id: ${line.slice(0, 200)}`);
    }
    this.pending.delete(id);
    if ('return' in msg) return p.resolve(msg.return);
    const error = isRecord(msg.error) ? msg.error : {};
    const cls = typeof error.class === 'string' ? error.class : 'Protocol';
    p.reject(new QmpError(p.command, cls, typeof error.desc === 'string' ? error.desc : line));
  }

  /** Ends the connection once: every pending command and waiter rejects with this class. */
  private fail(errorClass: string, desc: string, cause?: unknown): void {
    if (this.closedError) return;
    this.closedError = new QmpError('(connection)', errorClass, desc, { cause });
    this.socket.destroy();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(new QmpError(p.command, errorClass, desc, { cause }));
    this.emit('close', this.closedError);
  }
}
