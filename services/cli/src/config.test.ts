import { DEFAULT_HUB_URL, resolveConfig } from './config';
import { UsageError } from './errors';

describe('resolveConfig', () => {
  it('uses the default URL and no token when nothing is set', () => {
    expect(resolveConfig({}, {})).toEqual({ url: DEFAULT_HUB_URL, token: undefined, json: false });
  });

  it('reads TIDEMARK_URL and TIDEMARK_API_TOKEN', () => {
    const env = { TIDEMARK_URL: 'http://hub:9000', TIDEMARK_API_TOKEN: 'from-env' };
    expect(resolveConfig({ json: true }, env)).toEqual({
      url: 'http://hub:9000',
      token: 'from-env',
      json: true,
    });
  });

  it('lets flags win over the environment', () => {
    const env = { TIDEMARK_URL: 'http://hub:9000', TIDEMARK_API_TOKEN: 'from-env' };
    expect(resolveConfig({ url: 'https://other', token: 'from-flag' }, env)).toMatchObject({
      url: 'https://other',
      token: 'from-flag',
    });
  });

  it('refuses a URL that is not http(s)', () => {
    expect(() => resolveConfig({ url: 'nats://hub:4222' }, {})).toThrow(UsageError);
    expect(() => resolveConfig({}, { TIDEMARK_URL: 'not a url' })).toThrow(
      /not a URL \(--url or TIDEMARK_URL\)/,
    );
  });
});
