import { ErrorCode, ValidationError } from '@tidemark/shared';
import { decodeCursor, encodeCursor, fitPage } from './paging';

describe('cursors', () => {
  it('carry the sort key of their list, opaque and URL-safe', () => {
    const cursor = encodeCursor('jobs', ['2026-01-01T00:00:00.123Z', 'backup-1']);
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeCursor('jobs', cursor)).toEqual(['2026-01-01T00:00:00.123Z', 'backup-1']);
    expect(decodeCursor('vms', encodeCursor('vms', ['pg01']))).toEqual(['pg01']);
  });

  const refused = (list: 'jobs' | 'vms', cursor: string) => {
    try {
      decodeCursor(list, cursor);
    } catch (err) {
      expect(err).toBeInstanceOf(ValidationError);
      return (err as ValidationError).issues;
    }
    throw new Error(`${cursor} was accepted`);
  };
  const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

  it.each([
    ['garbage', 'bm90LWpzb24'],
    ['another list', encodeCursor('vms', ['pg01'])],
    ['a key too short', b64(['jobs', '2026-01-01T00:00:00.000Z'])],
    ['a time that is none', b64(['jobs', 'yesterday', 'backup-1'])],
    ['a time not in its own form', b64(['jobs', '2026-01-01', 'backup-1'])],
    ['a number for an id', b64(['jobs', '2026-01-01T00:00:00.000Z', 7])],
    ['an object', b64({ list: 'jobs' })],
  ])('refuses %s, naming the cursor', (_what, cursor) => {
    expect(refused('jobs', cursor)).toEqual([
      { path: 'cursor', message: expect.stringMatching(/^must be a next_cursor of the jobs list/) },
    ]);
  });
});

describe('fitPage', () => {
  const items = Array.from({ length: 11 }, (_, i) => ({ id: `item-${i}`, pad: 'x'.repeat(100) }));
  const cursorOf = (item: { id: string }) => `after-${item.id}`;
  const describe_ = (item: { id: string }) => `item ${item.id}`;

  it('holds `limit` items and a cursor when a further row was fetched', () => {
    expect(fitPage(items, 10, Infinity, cursorOf, describe_)).toEqual({
      items: items.slice(0, 10),
      nextCursor: 'after-item-9',
    });
  });

  it('has no cursor on the last page', () => {
    expect(fitPage(items.slice(0, 4), 10, Infinity, cursorOf, describe_)).toEqual({
      items: items.slice(0, 4),
      nextCursor: null,
    });
    expect(fitPage([], 10, Infinity, cursorOf, describe_)).toEqual({ items: [], nextCursor: null });
  });

  it('stops short of the reply limit, and its cursor goes on from there', () => {
    const maxBytes = 1200;
    const page = fitPage(items, 10, maxBytes, cursorOf, describe_);
    expect(page.items.length).toBeGreaterThan(0);
    expect(page.items.length).toBeLessThan(10);
    expect(page.nextCursor).toBe(`after-item-${page.items.length - 1}`);
    const reply = JSON.stringify({ ok: true, result: page });
    expect(Buffer.byteLength(reply)).toBeLessThanOrEqual(maxBytes);
  });

  it('refuses an item no reply can hold', () => {
    expect(() => fitPage(items, 10, 200, cursorOf, describe_)).toThrow(
      expect.objectContaining({
        code: ErrorCode.Internal,
        message: expect.stringMatching(
          /^item item-0 is \d+ bytes as JSON, more than a reply may carry/,
        ),
      }),
    );
  });
});
