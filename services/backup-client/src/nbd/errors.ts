import { NbdErrno } from './protocol';

export const NbdErrorCode = {
  /** The handshake failed: bad greeting, option refused, export missing. */
  HANDSHAKE: 'HANDSHAKE',
  /** The server sent something the protocol does not allow; the connection is ended. */
  PROTOCOL: 'PROTOCOL',
  /** The server answered a request with an error (see `errno`). */
  SERVER: 'SERVER',
  /** The connection closed (or was closed) before the request completed. */
  CLOSED: 'CLOSED',
  /** The request was refused locally (bad range, read-only export, unsupported command). */
  INVALID: 'INVALID',
} as const;
export type NbdErrorCode = (typeof NbdErrorCode)[keyof typeof NbdErrorCode];

export class NbdError extends Error {
  override readonly name = 'NbdError';
  readonly code: NbdErrorCode;
  /** NBD errno from the server (e.g. 22 = EINVAL), when the server sent one. */
  readonly errno?: number;
  /** Symbolic name of `errno`, e.g. `EINVAL`. */
  readonly errnoName?: string;

  constructor(code: NbdErrorCode, message: string, options?: { errno?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options?.errno !== undefined) {
      this.errno = options.errno;
      this.errnoName = NbdErrno[options.errno] ?? `errno ${options.errno}`;
    }
  }
}
