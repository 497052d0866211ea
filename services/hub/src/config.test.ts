import { ConfigError } from '@tidemark/shared';
import { loadConfig } from './config';

describe('hub configuration', () => {
  it('has defaults for everything, and without a token listens on 127.0.0.1', () => {
    expect(loadConfig({})).toEqual({
      TIDEMARK_NATS_URL: 'nats://127.0.0.1:4222',
      TIDEMARK_LOG_LEVEL: 'info',
      TIDEMARK_BUS_PREFIX: '',
      TIDEMARK_HUB_PORT: 8082,
      TIDEMARK_HUB_HOST: '127.0.0.1',
      TIDEMARK_API_TOKEN: undefined,
      TIDEMARK_LEDGER_TIMEOUT_MS: 5000,
      refusedHost: null,
    });
  });

  it('listens on all interfaces by default once a token is set, or where it is told', () => {
    expect(loadConfig({ TIDEMARK_API_TOKEN: 's3cret' })).toMatchObject({
      TIDEMARK_HUB_HOST: '0.0.0.0',
      TIDEMARK_API_TOKEN: 's3cret',
      refusedHost: null,
    });
    expect(
      loadConfig({ TIDEMARK_API_TOKEN: 's3cret', TIDEMARK_HUB_HOST: '10.0.0.5' }),
    ).toMatchObject({ TIDEMARK_HUB_HOST: '10.0.0.5' });
  });

  it('refuses to open a host beyond loopback without a token (an empty token is none)', () => {
    expect(loadConfig({ TIDEMARK_HUB_HOST: '0.0.0.0', TIDEMARK_API_TOKEN: '' })).toMatchObject({
      TIDEMARK_HUB_HOST: '127.0.0.1',
      TIDEMARK_API_TOKEN: undefined,
      refusedHost: '0.0.0.0',
    });
  });

  it('takes port 0 (a free port) and names every bad variable at once', () => {
    expect(loadConfig({ TIDEMARK_HUB_PORT: '0' }).TIDEMARK_HUB_PORT).toBe(0);
    const attempt = () =>
      loadConfig({
        TIDEMARK_HUB_PORT: '70000',
        TIDEMARK_LEDGER_TIMEOUT_MS: 'soon',
        TIDEMARK_NATS_URL: 'http://x',
      });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(
      expect.objectContaining({
        issues: [
          expect.objectContaining({ path: 'TIDEMARK_NATS_URL' }),
          expect.objectContaining({ path: 'TIDEMARK_HUB_PORT' }),
          expect.objectContaining({ path: 'TIDEMARK_LEDGER_TIMEOUT_MS' }),
        ],
      }),
    );
  });
});
