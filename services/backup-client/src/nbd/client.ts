import { connect as netConnect, type Socket } from 'node:net';
import type { ByteQueue } from './byte-queue';
import { NbdError } from './errors';
import { handshake, type ExportInfo } from './handshake';
import {
  Chunk,
  CHUNK_ERROR_BIT,
  Cmd,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  ReplyFlag,
  SIMPLE_REPLY_HEADER_SIZE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_SIZE,
  STRUCTURED_REPLY_MAGIC,
  TransmissionFlag,
} from './protocol';

export type NbdAddress = { path: string } | { host: string; port: number };

export interface NbdConnectOptions {
  exportName: string;
  /** Meta contexts to negotiate, e.g. `base:allocation`, `qemu:dirty-bitmap:b0`. */
  metaContexts?: string[];
  /** Most requests on the wire at once; further requests wait for a slot. Default 16. */
  maxInFlight?: number;
}

export interface Extent {
  /** Bytes covered by this extent. */
  length: number;
  /** Context-specific flags (`AllocationFlag`, `DIRTY_FLAG`). */
  flags: number;
}

interface Pending {
  cmd: Cmd;
  offset: number;
  length: number;
  /** READ destination: filled by data chunks, zeroed by hole chunks. */
  data?: Buffer;
  /** READ bytes covered by data and hole chunks so far; must reach `length`. */
  covered?: number;
  /** BLOCK_STATUS extents per context id. */
  extents?: Map<number, Extent[]>;
  error?: NbdError;
  resolve: () => void;
  reject: (err: NbdError) => void;
}

export class NbdClient {
  private readonly pending = new Map<number, Pending>();
  private readonly slotWaiters: Array<{ resolve: () => void; reject: (e: NbdError) => void }> = [];
  private nextCookie = 1;
  private inFlight = 0;
  private closedError: NbdError | undefined;
  private readonly contextNames: Map<number, string>;

  private constructor(
    private readonly socket: Socket,
    private readonly queue: ByteQueue,
    readonly info: ExportInfo,
    private readonly maxInFlight: number,
  ) {
    this.contextNames = new Map([...info.metaContexts].map(([name, id]) => [id, name]));
    socket.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      this.drain();
    });
    socket.on('error', (err) =>
      this.fail(new NbdError('CLOSED', `socket error: ${err.message}`, { cause: err })),
    );
    socket.on('close', () => this.fail(new NbdError('CLOSED', 'connection closed')));
    this.drain();
  }

  static async connect(address: NbdAddress, options: NbdConnectOptions): Promise<NbdClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s =
        'path' in address ? netConnect(address.path) : netConnect(address.port, address.host);
      const onError = (err: Error): void =>
        reject(new NbdError('HANDSHAKE', `cannot connect: ${err.message}`, { cause: err }));
      s.once('error', onError);
      s.once('connect', () => {
        s.off('error', onError);
        resolve(s);
      });
    });
    socket.setNoDelay(true);
    try {
      const { info, leftover } = await handshake(
        socket,
        options.exportName,
        options.metaContexts ?? [],
      );
      return new NbdClient(socket, leftover, info, options.maxInFlight ?? 16);
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  get size(): number {
    return this.info.size;
  }
  get readOnly(): boolean {
    return (this.info.transmissionFlags & TransmissionFlag.READ_ONLY) !== 0;
  }
  get closed(): boolean {
    return this.closedError !== undefined;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    return this.readInto(offset, Buffer.allocUnsafe(length));
  }

  /**
   * Reads `target.length` bytes at `offset` straight into `target` (a buffer the caller reuses,
   * so a copy loop allocates nothing per request). Longer reads are split at the server's
   * maximum, each part landing in its place.
   */
  async readInto(offset: number, target: Buffer): Promise<Buffer> {
    const length = target.length;
    this.checkRange(offset, length);
    const max = this.info.maxRequestSize;
    const parts: Promise<unknown>[] = [];
    for (let at = 0; at < length || at === 0; at += max) {
      const n = Math.min(max, length - at);
      parts.push(this.request(Cmd.READ, offset + at, n, undefined, target.subarray(at, at + n)));
      if (length === 0) break;
    }
    await Promise.all(parts);
    return target;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.checkWritable(offset, data.length);
    const max = this.info.maxRequestSize;
    const parts: Promise<unknown>[] = [];
    for (let at = 0; at < data.length || at === 0; at += max) {
      parts.push(
        this.request(
          Cmd.WRITE,
          offset + at,
          Math.min(max, data.length - at),
          data.subarray(at, at + max),
        ),
      );
      if (data.length === 0) break;
    }
    await Promise.all(parts);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkWritable(offset, length);
    this.requireFlag(TransmissionFlag.SEND_WRITE_ZEROES, 'WRITE_ZEROES');
    await this.splitLength(Cmd.WRITE_ZEROES, offset, length);
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable(offset, length);
    this.requireFlag(TransmissionFlag.SEND_TRIM, 'TRIM');
    await this.splitLength(Cmd.TRIM, offset, length);
  }

  async flush(): Promise<void> {
    this.requireFlag(TransmissionFlag.SEND_FLUSH, 'FLUSH');
    await this.request(Cmd.FLUSH, 0, 0);
  }

  /**
   * Extents per meta context name, starting at `offset`. The server may cover less than
   * `length` (and differently per context); callers advance by the smallest coverage.
   */
  async blockStatus(offset: number, length: number): Promise<Map<string, Extent[]>> {
    this.checkRange(offset, length);
    if (this.contextNames.size === 0)
      throw new NbdError('INVALID', 'no meta context was negotiated');
    const p = await this.request(Cmd.BLOCK_STATUS, offset, Math.min(length, 0xffffffff));
    const out = new Map<string, Extent[]>();
    for (const [id, extents] of p.extents ?? [])
      out.set(this.contextNames.get(id) as string, extents);
    return out;
  }

  /** Sends NBD_CMD_DISC after the pending requests finish, then closes the socket. */
  async disconnect(): Promise<void> {
    if (this.closedError) return;
    await Promise.allSettled(
      [...this.pending.values()].map(
        (p) =>
          new Promise((r) => {
            const { resolve, reject } = p;
            p.resolve = () => {
              resolve();
              r(undefined);
            };
            p.reject = (e) => {
              reject(e);
              r(undefined);
            };
          }),
      ),
    );
    if (this.closedError) return;
    this.socket.write(this.header(Cmd.DISC, 0, 0, 0));
    this.closedError = new NbdError('CLOSED', 'client disconnected');
    await new Promise<void>((resolve) => this.socket.end(resolve));
    this.socket.destroy();
  }

  private async splitLength(cmd: Cmd, offset: number, length: number): Promise<void> {
    const max = 0x80000000; // length field is 32-bit; stay well under it
    const parts: Promise<unknown>[] = [];
    for (let at = 0; at < length; at += max)
      parts.push(this.request(cmd, offset + at, Math.min(max, length - at)));
    await Promise.all(parts);
  }

  private checkRange(offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0
    ) {
      throw new NbdError('INVALID', `bad range offset=${offset} length=${length}`);
    }
  }

  private checkWritable(offset: number, length: number): void {
    this.checkRange(offset, length);
    if (this.readOnly) throw new NbdError('INVALID', 'export is read-only');
  }

  private requireFlag(flag: number, what: string): void {
    if (!(this.info.transmissionFlags & flag))
      throw new NbdError('INVALID', `server does not support ${what}`);
  }

  private header(cmd: Cmd, cookie: number, offset: number, length: number): Buffer {
    const h = Buffer.alloc(REQUEST_HEADER_SIZE);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(0, 4);
    h.writeUInt16BE(cmd, 6);
    h.writeUInt32BE(0, 8); // cookie high half
    h.writeUInt32BE(cookie, 12);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return h;
  }

  private async acquireSlot(): Promise<void> {
    if (this.closedError) throw this.closedError;
    if (this.inFlight < this.maxInFlight) {
      this.inFlight++;
      return;
    }
    await new Promise<void>((resolve, reject) => this.slotWaiters.push({ resolve, reject }));
  }

  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next)
      next.resolve(); // the slot passes straight on
    else this.inFlight--;
  }

  private async request(
    cmd: Cmd,
    offset: number,
    length: number,
    payload?: Buffer,
    into?: Buffer,
  ): Promise<Pending> {
    await this.acquireSlot();
    try {
      if (this.closedError) throw this.closedError;
      const cookie = this.nextCookie;
      this.nextCookie = this.nextCookie >= 0xffffffff ? 1 : this.nextCookie + 1;
      return await new Promise<Pending>((resolve, reject) => {
        const p: Pending = { cmd, offset, length, resolve: () => resolve(p), reject };
        // Unfilled parts of a read are holes: zeroed when a hole chunk says so, or at the end
        // if the server sent less than asked (see complete()).
        if (cmd === Cmd.READ) p.data = into ?? Buffer.allocUnsafe(length);
        if (cmd === Cmd.BLOCK_STATUS) p.extents = new Map();
        this.pending.set(cookie, p);
        this.socket.write(this.header(cmd, cookie, offset, length));
        if (payload && payload.length > 0) this.socket.write(payload);
      });
    } finally {
      this.releaseSlot();
    }
  }

  /** Ends the connection: every pending and waiting request rejects with `err`. */
  private fail(err: NbdError): void {
    if (!this.closedError) this.closedError = err;
    this.socket.destroy();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(err);
    const waiters = this.slotWaiters.splice(0);
    for (const w of waiters) w.reject(err);
  }

  private drain(): void {
    try {
      while (this.parseOne()) {
        // keep parsing complete replies
      }
    } catch (err) {
      this.fail(
        err instanceof NbdError ? err : new NbdError('PROTOCOL', String(err), { cause: err }),
      );
    }
  }

  /** Parses one complete reply (or chunk) if buffered; returns false when more bytes are needed. */
  private parseOne(): boolean {
    const q = this.queue;
    if (q.length < 4) return false;
    const magic = q.peek(4).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      if (q.length < SIMPLE_REPLY_HEADER_SIZE) return false;
      const h = q.peek(SIMPLE_REPLY_HEADER_SIZE);
      const cookie = this.cookieOf(h, 8);
      const p = this.pending.get(cookie);
      if (!p) throw new NbdError('PROTOCOL', `simple reply for unknown cookie ${cookie}`);
      if (p.cmd === Cmd.READ || p.cmd === Cmd.BLOCK_STATUS) {
        // Structured replies were negotiated: a simple reply carries no data, so only an error fits.
        if (h.readUInt32BE(4) === 0)
          throw new NbdError('PROTOCOL', 'simple reply without error to a READ/BLOCK_STATUS');
      }
      q.take(SIMPLE_REPLY_HEADER_SIZE);
      this.pending.delete(cookie);
      const errno = h.readUInt32BE(4);
      if (errno !== 0)
        p.reject(new NbdError('SERVER', `server error ${errno} for command ${p.cmd}`, { errno }));
      else p.resolve();
      return true;
    }
    if (magic !== STRUCTURED_REPLY_MAGIC)
      throw new NbdError('PROTOCOL', `bad reply magic 0x${magic.toString(16)}`);
    if (q.length < STRUCTURED_REPLY_HEADER_SIZE) return false;
    const h = q.peek(STRUCTURED_REPLY_HEADER_SIZE);
    const flags = h.readUInt16BE(4);
    const type = h.readUInt16BE(6);
    const cookie = this.cookieOf(h, 8);
    const length = h.readUInt32BE(16);
    const p = this.pending.get(cookie);
    if (!p) throw new NbdError('PROTOCOL', `structured reply for unknown cookie ${cookie}`);
    // Room for a hole or error chunk on a tiny read; data chunks are range-checked in applyChunk.
    const limit = p.cmd === Cmd.READ ? p.length + 8 + 8192 : 1 << 26;
    if (length > limit)
      throw new NbdError('PROTOCOL', `chunk of ${length} bytes is longer than asked`);
    if (q.length < STRUCTURED_REPLY_HEADER_SIZE + length) return false;
    q.take(STRUCTURED_REPLY_HEADER_SIZE);
    if (type === Chunk.OFFSET_DATA && p.cmd === Cmd.READ && p.data && length >= 8) {
      // Data goes from the socket's buffers straight into the caller's buffer.
      const at = Number(q.take(8).readBigUInt64BE(0)) - p.offset;
      const n = length - 8;
      if (at < 0 || at + n > p.length) {
        throw new NbdError('PROTOCOL', 'read chunk outside the requested range');
      }
      q.takeInto(p.data, at, n);
      p.covered = (p.covered ?? 0) + n;
    } else {
      this.applyChunk(p, type, q.take(length));
    }
    if (flags & ReplyFlag.DONE) {
      this.pending.delete(cookie);
      if (p.error) p.reject(p.error);
      else if (p.cmd === Cmd.READ && (p.covered ?? 0) !== p.length) {
        // Chunks may not overlap, so a complete reply covers exactly the range asked for.
        const err = new NbdError(
          'PROTOCOL',
          `read reply covered ${p.covered ?? 0} of ${p.length} bytes`,
        );
        p.reject(err);
        throw err; // ends the connection: every other pending request rejects too
      } else p.resolve();
    }
    return true;
  }

  private cookieOf(h: Buffer, at: number): number {
    if (h.readUInt32BE(at) !== 0)
      throw new NbdError('PROTOCOL', 'reply for unknown cookie (high half set)');
    return h.readUInt32BE(at + 4);
  }

  private applyChunk(p: Pending, type: number, body: Buffer): void {
    if (type & CHUNK_ERROR_BIT) {
      if (body.length < 6) throw new NbdError('PROTOCOL', 'error chunk too short');
      const errno = body.readUInt32BE(0);
      const msgLen = body.readUInt16BE(4);
      const message = body.subarray(6, 6 + msgLen).toString('utf8');
      const where =
        type === Chunk.ERROR_OFFSET && body.length >= 14 + msgLen
          ? ` at ${body.readBigUInt64BE(6 + msgLen)}`
          : '';
      p.error ??= new NbdError(
        'SERVER',
        `server error ${errno}${where}${message ? `: ${message}` : ''}`,
        { errno },
      );
      return;
    }
    switch (type) {
      case Chunk.NONE:
        return;
      case Chunk.OFFSET_DATA:
      case Chunk.OFFSET_HOLE: {
        if (p.cmd !== Cmd.READ || !p.data)
          throw new NbdError('PROTOCOL', `data chunk for command ${p.cmd}`);
        if (body.length < (type === Chunk.OFFSET_DATA ? 8 : 12))
          throw new NbdError('PROTOCOL', 'short read chunk');
        const at = Number(body.readBigUInt64BE(0)) - p.offset;
        const n = type === Chunk.OFFSET_DATA ? body.length - 8 : body.readUInt32BE(8);
        if (at < 0 || at + n > p.length)
          throw new NbdError('PROTOCOL', 'read chunk outside the requested range');
        if (type === Chunk.OFFSET_DATA) body.copy(p.data, at, 8);
        else p.data.fill(0, at, at + n);
        p.covered = (p.covered ?? 0) + n;
        return;
      }
      case Chunk.BLOCK_STATUS: {
        if (p.cmd !== Cmd.BLOCK_STATUS || !p.extents)
          throw new NbdError('PROTOCOL', 'block status chunk for another command');
        if (body.length < 12 || (body.length - 4) % 8 !== 0)
          throw new NbdError('PROTOCOL', 'malformed block status chunk');
        const id = body.readUInt32BE(0);
        if (!this.contextNames.has(id))
          throw new NbdError('PROTOCOL', `block status for unknown context ${id}`);
        const extents: Extent[] = [];
        for (let i = 4; i < body.length; i += 8)
          extents.push({ length: body.readUInt32BE(i), flags: body.readUInt32BE(i + 4) });
        p.extents.set(id, extents);
        return;
      }
      default:
        throw new NbdError('PROTOCOL', `unknown chunk type ${type}`);
    }
  }
}
