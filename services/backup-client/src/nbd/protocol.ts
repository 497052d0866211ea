/** NBD wire constants (fixed newstyle handshake, structured replies). 64-bit fields are big-endian. */

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPT_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const HandshakeFlag = { FIXED_NEWSTYLE: 1, NO_ZEROES: 2 } as const;
export const ClientFlag = { C_FIXED_NEWSTYLE: 1, C_NO_ZEROES: 2 } as const;

export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  GO: 7,
  STRUCTURED_REPLY: 8,
  SET_META_CONTEXT: 10,
} as const;

export const OptReply = { ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4 } as const;
/** Option reply types with bit 31 set are errors. */
export const OPT_REPLY_ERROR_BIT = 0x80000000;

export const Info = { EXPORT: 0, BLOCK_SIZE: 3 } as const;

/** Transmission flags sent by the server with NBD_INFO_EXPORT. */
export const TransmissionFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
} as const;

export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;
export type Cmd = (typeof Cmd)[keyof typeof Cmd];

export const ReplyFlag = { DONE: 1 } as const;

export const Chunk = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;
/** Chunk types with bit 15 set are errors. */
export const CHUNK_ERROR_BIT = 0x8000;

/** `base:allocation` extent flags. */
export const AllocationFlag = { HOLE: 1, ZERO: 2 } as const;
/** `qemu:dirty-bitmap:<name>` extent flag. */
export const DIRTY_FLAG = 1;

export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_HEADER_SIZE = 16;
export const STRUCTURED_REPLY_HEADER_SIZE = 20;

/** NBD errno values (the protocol's own numbering, close to Linux's). */
export const NbdErrno: Readonly<Record<number, string>> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EOVERFLOW',
  95: 'ENOTSUP',
  108: 'ESHUTDOWN',
};
