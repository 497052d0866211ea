import type { Socket } from 'node:net';
import { ByteQueue } from './byte-queue';
import { NbdError } from './errors';
import {
  ClientFlag,
  HandshakeFlag,
  IHAVEOPT,
  Info,
  NBDMAGIC,
  Opt,
  OPT_REPLY_ERROR_BIT,
  OPT_REPLY_MAGIC,
  OptReply,
} from './protocol';

/** What the server told us about the export during NBD_OPT_GO. */
export interface ExportInfo {
  /** Export size in bytes (up to 2^53). */
  size: number;
  /** Raw transmission flags (see `TransmissionFlag`). */
  transmissionFlags: number;
  /** Largest request payload the server accepts, in bytes; 32 MiB when the server does not say. */
  maxRequestSize: number;
  /** Preferred request alignment in bytes; 1 when the server does not say. */
  minBlockSize: number;
  /** Meta context name → the id the server assigned to it. */
  metaContexts: Map<string, number>;
}

const DEFAULT_MAX_REQUEST = 32 * 1024 * 1024;

/** Reads exact byte counts from a socket during the (sequential) handshake. */
class HandshakeReader {
  readonly queue = new ByteQueue();
  private waiter:
    { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(private readonly socket: Socket) {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  detach(): ByteQueue {
    this.socket.off('data', this.onData);
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    return this.queue;
  }

  read(n: number): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.queue.length >= n) return Promise.resolve(this.queue.take(n));
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  private readonly onData = (chunk: Buffer): void => {
    this.queue.push(chunk);
    const w = this.waiter;
    if (w && this.queue.length >= w.n) {
      this.waiter = undefined;
      w.resolve(this.queue.take(w.n));
    }
  };

  private fail(err: Error): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }

  private readonly onError = (err: Error): void => {
    this.fail(
      new NbdError('HANDSHAKE', `socket error during handshake: ${err.message}`, { cause: err }),
    );
  };

  private readonly onClose = (): void => {
    this.fail(new NbdError('HANDSHAKE', 'server closed the connection during the handshake'));
  };
}

function optionRequest(option: number, data: Buffer): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(IHAVEOPT, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

function lengthPrefixed(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([len, bytes]);
}

interface OptionReply {
  type: number;
  data: Buffer;
}

async function readOptionReply(reader: HandshakeReader, option: number): Promise<OptionReply> {
  const header = await reader.read(20);
  if (header.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) {
    throw new NbdError('HANDSHAKE', 'bad option reply magic');
  }
  const replyOption = header.readUInt32BE(8);
  const type = header.readUInt32BE(12);
  const length = header.readUInt32BE(16);
  if (replyOption !== option) {
    throw new NbdError('HANDSHAKE', `option reply for option ${replyOption}, expected ${option}`);
  }
  if (length > 1 << 24) throw new NbdError('HANDSHAKE', `option reply of ${length} bytes`);
  const data = length > 0 ? Buffer.from(await reader.read(length)) : Buffer.alloc(0);
  if (type & OPT_REPLY_ERROR_BIT) {
    const detail = data.length > 0 ? `: ${data.toString('utf8')}` : '';
    throw new NbdError(
      'HANDSHAKE',
      `server refused option ${option} (reply type 0x${type.toString(16)})${detail}`,
    );
  }
  return { type, data };
}

function readUInt64AsNumber(buf: Buffer, offset: number): number {
  const value = buf.readBigUInt64BE(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new NbdError('HANDSHAKE', `64-bit value ${value} exceeds 2^53`);
  }
  return Number(value);
}

/**
 * Fixed newstyle handshake: structured replies, meta contexts, then NBD_OPT_GO.
 * Returns the export's details and the bytes already received past the handshake.
 */
export async function handshake(
  socket: Socket,
  exportName: string,
  metaContexts: readonly string[],
): Promise<{ info: ExportInfo; leftover: ByteQueue }> {
  const reader = new HandshakeReader(socket);
  try {
    const greeting = await reader.read(18);
    if (greeting.readBigUInt64BE(0) !== NBDMAGIC || greeting.readBigUInt64BE(8) !== IHAVEOPT) {
      throw new NbdError('HANDSHAKE', 'not a fixed newstyle NBD server (bad greeting magic)');
    }
    const serverFlags = greeting.readUInt16BE(16);
    if (!(serverFlags & HandshakeFlag.FIXED_NEWSTYLE)) {
      throw new NbdError('HANDSHAKE', 'server does not support fixed newstyle negotiation');
    }
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(
      ClientFlag.C_FIXED_NEWSTYLE |
        (serverFlags & HandshakeFlag.NO_ZEROES ? ClientFlag.C_NO_ZEROES : 0),
      0,
    );
    socket.write(clientFlags);

    socket.write(optionRequest(Opt.STRUCTURED_REPLY, Buffer.alloc(0)));
    const structured = await readOptionReply(reader, Opt.STRUCTURED_REPLY);
    if (structured.type !== OptReply.ACK) {
      throw new NbdError(
        'HANDSHAKE',
        `unexpected reply type ${structured.type} to STRUCTURED_REPLY`,
      );
    }

    const contexts = new Map<string, number>();
    if (metaContexts.length > 0) {
      const count = Buffer.alloc(4);
      count.writeUInt32BE(metaContexts.length, 0);
      const payload = Buffer.concat([
        lengthPrefixed(exportName),
        count,
        ...metaContexts.map(lengthPrefixed),
      ]);
      socket.write(optionRequest(Opt.SET_META_CONTEXT, payload));
      for (;;) {
        const reply = await readOptionReply(reader, Opt.SET_META_CONTEXT);
        if (reply.type === OptReply.ACK) break;
        if (reply.type !== OptReply.META_CONTEXT || reply.data.length < 4) {
          throw new NbdError(
            'HANDSHAKE',
            `unexpected reply type ${reply.type} to SET_META_CONTEXT`,
          );
        }
        contexts.set(reply.data.subarray(4).toString('utf8'), reply.data.readUInt32BE(0));
      }
      const missing = metaContexts.filter((name) => !contexts.has(name));
      if (missing.length > 0) {
        throw new NbdError(
          'HANDSHAKE',
          `server does not offer meta context(s): ${missing.join(', ')}`,
        );
      }
    }

    const infoRequests = Buffer.alloc(4);
    infoRequests.writeUInt16BE(1, 0);
    infoRequests.writeUInt16BE(Info.BLOCK_SIZE, 2);
    socket.write(optionRequest(Opt.GO, Buffer.concat([lengthPrefixed(exportName), infoRequests])));
    let size: number | undefined;
    let transmissionFlags = 0;
    let maxRequestSize = DEFAULT_MAX_REQUEST;
    let minBlockSize = 1;
    for (;;) {
      const reply = await readOptionReply(reader, Opt.GO);
      if (reply.type === OptReply.ACK) break;
      if (reply.type !== OptReply.INFO || reply.data.length < 2) continue; // unknown replies are ignored
      const infoType = reply.data.readUInt16BE(0);
      if (infoType === Info.EXPORT && reply.data.length >= 12) {
        size = readUInt64AsNumber(reply.data, 2);
        transmissionFlags = reply.data.readUInt16BE(10);
      } else if (infoType === Info.BLOCK_SIZE && reply.data.length >= 14) {
        minBlockSize = reply.data.readUInt32BE(2);
        maxRequestSize = Math.min(reply.data.readUInt32BE(10), DEFAULT_MAX_REQUEST);
      }
    }
    if (size === undefined)
      throw new NbdError('HANDSHAKE', 'server sent no NBD_INFO_EXPORT before ACK');
    return {
      info: { size, transmissionFlags, maxRequestSize, minBlockSize, metaContexts: contexts },
      leftover: reader.detach(),
    };
  } catch (err) {
    reader.detach();
    throw err;
  }
}
