import { ConfigError } from '@tidemark/shared';
import { loadConfig } from './config';

const roots = { TIDEMARK_REPOSITORY_ROOTS: '/srv/tidemark', TIDEMARK_SOURCE_ROOTS: '/srv/vm' };

describe('runner configuration', () => {
  it('needs its repository and source roots: with neither it does not start', () => {
    const attempt = () => loadConfig({});
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(
      expect.objectContaining({
        issues: [
          expect.objectContaining({
            path: 'TIDEMARK_REPOSITORY_ROOTS',
            message: expect.stringContaining('required'),
          }),
          expect.objectContaining({
            path: 'TIDEMARK_SOURCE_ROOTS',
            message: expect.stringContaining('required'),
          }),
        ],
      }),
    );
  });

  it('takes a list separated by ":" or ",", without duplicates', () => {
    const config = loadConfig({
      TIDEMARK_REPOSITORY_ROOTS: '/srv/tidemark:/var/lib/tidemark,/srv/tidemark',
      TIDEMARK_SOURCE_ROOTS: ' /srv/vm , /run/vm ',
    });
    expect(config.TIDEMARK_REPOSITORY_ROOTS).toEqual(['/srv/tidemark', '/var/lib/tidemark']);
    expect(config.TIDEMARK_SOURCE_ROOTS).toEqual(['/srv/vm', '/run/vm']);
  });

  it.each([
    ['an empty list', '', 'names no directory'],
    ['only separators', ':,', 'names no directory'],
    ['/', '/', '/ is the root directory'],
    ['/ among others', '/srv/tidemark:/', '/ is the root directory'],
    ['a system directory', '/etc', '/etc is the system directory /etc'],
    ['one below a system directory', '/usr/local/backups', 'is the system directory /usr'],
    ['MySQL data', '/var/lib/mysql', 'is the system directory /var/lib/mysql'],
    ['a directory that holds system directories', '/var', 'holds the system directory'],
    ['a shared directory itself', '/tmp', 'is the shared directory /tmp itself'],
    ['a relative path', 'srv/tidemark', 'must be an absolute path'],
    ['a ".." segment', '/srv/../etc', 'must be a normal path'],
  ])('refuses %s, naming the variable', (_, value, why) => {
    for (const variable of ['TIDEMARK_REPOSITORY_ROOTS', 'TIDEMARK_SOURCE_ROOTS']) {
      const attempt = () => loadConfig({ ...roots, [variable]: value });
      expect(attempt).toThrow(ConfigError);
      expect(attempt).toThrow(
        expect.objectContaining({
          issues: [
            expect.objectContaining({ path: variable, message: expect.stringContaining(why) }),
          ],
        }),
      );
    }
  });
});
