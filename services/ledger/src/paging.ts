// The ledger's side of paging (see shared/src/paging.ts): cursors are base64url of a JSON array,
// the list's name and then the last item's sort key; pages stop early rather than outgrow a
// NATS message.
import {
  CURSOR_MAX_LENGTH,
  ErrorCode,
  TidemarkError,
  ValidationError,
  type Page,
} from '@tidemark/shared';

/** The lists that page, each with the kinds of its sort key's parts. */
export const sortKeys = {
  jobs: ['time', 'text'],
  repositories: ['time', 'text'],
  policies: ['time', 'text'],
  vms: ['text'],
} as const;
export type PagedList = keyof typeof sortKeys;

/** The cursor of the page after the item with this sort key. */
export function encodeCursor(list: PagedList, key: string[]): string {
  return Buffer.from(JSON.stringify([list, ...key]), 'utf8').toString('base64url');
}

const isInstant = (s: string) => {
  const t = new Date(s);
  return !Number.isNaN(t.getTime()) && t.toISOString() === s;
};

/** The sort key in a cursor of `list`; a ValidationError naming `cursor` for anything else. */
export function decodeCursor(list: PagedList, cursor: string): string[] {
  const refuse = (why: string) =>
    new ValidationError(`the cursor is not one the ${list} list answered: ${why}`, [
      { path: 'cursor', message: `must be a next_cursor of the ${list} list (${why})` },
    ]);
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw refuse('it does not decode');
  }
  const kinds = sortKeys[list];
  if (!Array.isArray(decoded) || decoded.length !== kinds.length + 1) {
    throw refuse('it does not decode');
  }
  if (decoded[0] !== list) throw refuse('it belongs to another list');
  const key = decoded.slice(1) as unknown[];
  kinds.forEach((kind, i) => {
    const part = key[i];
    if (typeof part !== 'string' || part.length === 0 || part.length > CURSOR_MAX_LENGTH) {
      throw refuse('its sort key is malformed');
    }
    if (kind === 'time' && !isInstant(part)) throw refuse('its sort key is malformed');
  });
  return key as string[];
}

/** What a reply adds around a page's items: `{"ok":true,"result":{"items":[],"nextCursor":…}}`. */
const ENVELOPE_BYTES = 64 + CURSOR_MAX_LENGTH;

/**
 * A page of `rows` (fetched as `limit + 1`, so a further row means there is more): at most
 * `limit` items, and no more than fit in a reply of `maxBytes`. A page cut short for size has a
 * next cursor like any other. An item that alone is too large for any reply is an error.
 */
export function fitPage<T>(
  rows: T[],
  limit: number,
  maxBytes: number,
  cursorOf: (item: T) => string,
  describe: (item: T) => string,
): Page<T> {
  const items: T[] = [];
  let bytes = ENVELOPE_BYTES;
  for (const item of rows.slice(0, limit)) {
    const size = Buffer.byteLength(JSON.stringify(item)) + 1;
    if (bytes + size > maxBytes) {
      if (items.length > 0) break;
      throw new TidemarkError(
        ErrorCode.Internal,
        `${describe(item)} is ${size} bytes as JSON, more than a reply may carry (the bus's max_payload is ${maxBytes}): no page can hold it`,
      );
    }
    items.push(item);
    bytes += size;
  }
  const more = items.length < rows.length;
  return { items, nextCursor: more ? cursorOf(items[items.length - 1]) : null };
}
