// Every list, over the bus and over REST, is read a page at a time: at most `limit` items (up to
// PAGE_LIMIT_MAX), and an opaque cursor to the next page. The ledger writes and reads cursors;
// everyone else hands them back as they got them.
import { z } from 'zod';

/** Most items one page may hold. */
export const PAGE_LIMIT_MAX = 100;
/** Items per page when the request names no limit. */
export const PAGE_LIMIT_DEFAULT = 50;
/** Longest cursor a request may carry (the ledger's are well under). */
export const CURSOR_MAX_LENGTH = 512;

/**
 * Where the next page starts: base64url of the last item's sort key, as `next_cursor` gave it.
 * Keyset paging: a page starts after that key, so rows written meanwhile never shift a page.
 */
export const Cursor = z
  .string()
  .min(1)
  .max(CURSOR_MAX_LENGTH)
  .regex(/^[A-Za-z0-9_-]+$/, 'must be a next_cursor this list answered');

/** One page of a list: `nextCursor` is null on the last page. */
export interface Page<T> {
  items: T[];
  /**
   * Set while there may be more; null at the end. A page can hold fewer than `limit` items and
   * still have a next one: the ledger ends a page early rather than send more than NATS carries.
   */
  nextCursor: string | null;
}
