import { RepositoryRoot, systemDirectoryReason } from './system-dirs';

describe('systemDirectoryReason', () => {
  it.each([
    '/srv/tidemark',
    '/var/lib/tidemark',
    '/var/lib/tidemark/repo-1',
    '/run/vm',
    '/tmp/tidemark-e2e-abc',
    '/home/ops/vms',
    '/data',
    '/etcetera',
    '/usrdata',
    '/var/lib/mysql-backups',
  ])('lets %s be a root', (path) => {
    expect(systemDirectoryReason(path)).toBeNull();
  });

  it.each([
    ['/', 'is the root directory'],
    ['/etc', 'is the system directory /etc'],
    ['/etc/tidemark', 'is the system directory /etc or below it'],
    ['/usr/local/vms', 'is the system directory /usr or below it'],
    ['/lib', 'is the system directory /lib'],
    ['/lib64/x', 'is the system directory /lib64'],
    ['/libx32', 'is the system directory /libx32'],
    ['/proc/self', 'is the system directory /proc'],
    ['/sys', 'is the system directory /sys'],
    ['/dev/shm', 'is the system directory /dev'],
    ['/boot', 'is the system directory /boot'],
    ['/bin', 'is the system directory /bin'],
    ['/sbin', 'is the system directory /sbin'],
    ['/var/lib/mysql', 'is the system directory /var/lib/mysql'],
    ['/var', 'holds the system directory'],
    ['/var/lib', 'holds the system directory'],
    ['/run', 'is the shared directory /run itself'],
    ['/tmp', 'is the shared directory /tmp itself'],
    ['/home', 'is the shared directory /home itself'],
    ['/srv', 'is the shared directory /srv itself'],
  ])('refuses %s: it %s', (path, why) => {
    expect(systemDirectoryReason(path)).toContain(why);
  });
});

describe('RepositoryRoot', () => {
  it('takes a directory of its own', () => {
    expect(RepositoryRoot.safeParse('/srv/tidemark').success).toBe(true);
  });

  it.each(['/', '/etc', '/usr/lib/tidemark', '/var/lib/mysql/x'])(
    'refuses %s, saying it is a system directory',
    (path) => {
      const r = RepositoryRoot.safeParse(path);
      expect(r.success).toBe(false);
      expect(r.error?.issues).toEqual([
        expect.objectContaining({
          message: expect.stringContaining('must not be / or a system directory'),
        }),
      ]);
    },
  );

  it('still refuses a path that is not normal, once', () => {
    const r = RepositoryRoot.safeParse('/srv/tidemark/../../etc');
    expect(r.error?.issues.map((i) => i.message)).toEqual([
      expect.stringContaining('must be a normal path'),
    ]);
  });
});
