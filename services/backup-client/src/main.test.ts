import { tmpdir } from 'node:os';
import { socketSafeBase } from './config';

describe('socketSafeBase', () => {
  it('keeps a work directory whose sockets fit a Unix socket path', () => {
    expect(socketSafeBase('/var/lib/tidemark/runner')).toBe('/var/lib/tidemark/runner');
    expect(socketSafeBase(undefined)).toBe(tmpdir());
  });

  it('moves to a short directory when the sockets would not fit (qemu-nbd: "too long")', () => {
    const deep = `/tmp/${'nested-directory/'.repeat(4)}runner/tidemark-runner-abcdef`;
    const base = socketSafeBase(deep);
    expect(base).not.toBe(deep);
    expect(
      Buffer.byteLength(`${base}/tidemark-client-XXXXXX/live-0123456789abcdef.sock`),
    ).toBeLessThanOrEqual(107);
  });
});
