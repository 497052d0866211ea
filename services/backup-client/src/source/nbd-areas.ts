import { setTimeout as sleep } from 'node:timers/promises';
import {
  AllocationFlag,
  DIRTY_FLAG,
  NbdClient,
  NbdError,
  type NbdAddress,
  type NbdConnectOptions,
} from '../nbd/index';
import type { Area } from './types';

/** Connects, retrying while a just-started server is not yet accepting (socket bound, not listening). */
export async function connectWithRetry(
  address: NbdAddress,
  options: NbdConnectOptions,
  attempts = 50,
): Promise<NbdClient> {
  for (let i = 1; ; i++) {
    try {
      return await NbdClient.connect(address, { maxInFlight: 64, ...options });
    } catch (err) {
      const refused = err instanceof NbdError && /ECONNREFUSED|ENOENT/.test(String(err.message));
      if (!refused || i >= attempts) throw err;
      await sleep(20);
    }
  }
}

/** Largest BLOCK_STATUS request (the length field is 32-bit); a multiple of 64 KiB. */
const STATUS_SPAN = 0xffff0000;

/**
 * Areas from `offset` that a context marks: dirty for `qemu:dirty-bitmap:*`, reading as data
 * (not zero) for `base:allocation`. Adjacent areas are merged.
 */
export async function queryAreas(
  client: NbdClient,
  context: string,
  offset: number,
): Promise<{ areas: Area[]; covered: number }> {
  const length = Math.min(STATUS_SPAN, client.size - offset);
  if (length <= 0) return { areas: [], covered: client.size };
  const extents = (await client.blockStatus(offset, length)).get(context);
  if (!extents || extents.length === 0)
    throw new NbdError('PROTOCOL', `no ${context} extents at offset ${offset}`);
  const dirty = context.startsWith('qemu:dirty-bitmap:');
  const areas: Area[] = [];
  let at = offset;
  const end = offset + length;
  for (const e of extents) {
    if (at >= end) break;
    const n = Math.min(e.length, end - at);
    const marked = dirty ? (e.flags & DIRTY_FLAG) !== 0 : (e.flags & AllocationFlag.ZERO) === 0;
    if (marked) {
      const last = areas[areas.length - 1];
      if (last && last.offset + last.length === at) last.length += n;
      else areas.push({ offset: at, length: n });
    }
    at += n;
  }
  if (at === offset) throw new NbdError('PROTOCOL', `empty ${context} extent at offset ${offset}`);
  return { areas, covered: at };
}
