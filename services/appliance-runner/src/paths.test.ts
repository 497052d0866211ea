import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, createLogger, StartDataV1, type StartData } from '@tidemark/shared';
import {
  checkInsideRepository,
  checkRepositoryRoot,
  checkSourceAllowed,
  PathOutsideRepositoryError,
  realRoots,
  refusePaths,
  SourceNotAllowedError,
} from './paths';

describe('checkInsideRepository', () => {
  const base = mkdtempSync(join(tmpdir(), 'tidemark-paths-'));
  const repo = join(base, 'repo');
  const outside = join(base, 'outside');
  mkdirSync(join(repo, 'pg01'), { recursive: true });
  mkdirSync(outside);
  symlinkSync(outside, join(repo, 'escape'));
  writeFileSync(join(outside, 'victim.qcow2'), 'x');
  symlinkSync(join(outside, 'victim.qcow2'), join(repo, 'pg01', 'link.qcow2'));
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  it('accepts a path under a repository that does not exist yet', async () => {
    const fresh = join(base, 'fresh-repo');
    await expect(
      checkInsideRepository(fresh, 'targetPath', join(fresh, 'vm', 'job', 'd.qcow2')),
    ).resolves.toBeUndefined();
  });

  it.each([
    ['a new job directory', 'pg01/job-1/disk-0.qcow2'],
    ['a file in an existing directory', 'pg01/disk-0.qcow2'],
  ])('accepts %s', async (_, rel) => {
    await expect(
      checkInsideRepository(repo, 'targetPath', join(repo, rel)),
    ).resolves.toBeUndefined();
  });

  it.each([
    ['a ".." detour', `${repo}/pg01/../../outside/x.qcow2`, 'is not a normal absolute path'],
    ['a relative path', 'pg01/x.qcow2', 'is not a normal absolute path'],
    ['another directory', join(outside, 'x.qcow2'), 'is not under the repository'],
    ['a sibling sharing the prefix', `${repo}-other/x.qcow2`, 'is not under the repository'],
    ['a symlinked directory', join(repo, 'escape', 'job', 'x.qcow2'), 'through a symlink'],
    ['a symlinked file', join(repo, 'pg01', 'link.qcow2'), 'is a symlink'],
  ])('refuses %s, naming the field and why', async (_, path, why) => {
    const err = await checkInsideRepository(repo, 'disks[0].targetPath', path).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PathOutsideRepositoryError);
    expect((err as Error).message).toContain('disks[0].targetPath');
    expect((err as Error).message).toContain(why);
  });
});

describe("the runner's own roots", () => {
  const base = mkdtempSync(join(tmpdir(), 'tidemark-roots-'));
  const repos = join(base, 'repos');
  const vms = join(base, 'vm');
  const evil = join(base, 'vm-evil');
  const elsewhere = join(base, 'elsewhere');
  for (const d of [join(repos, 'main'), vms, evil, elsewhere]) mkdirSync(d, { recursive: true });
  writeFileSync(join(vms, 'pg01.qcow2'), 'x');
  writeFileSync(join(evil, 'pg01.qcow2'), 'x');
  writeFileSync(join(elsewhere, 'secret.qcow2'), 'x');
  // Below the roots, leading out of them.
  symlinkSync(elsewhere, join(repos, 'linked'));
  symlinkSync(join(elsewhere, 'secret.qcow2'), join(vms, 'link.qcow2'));
  symlinkSync(elsewhere, join(vms, 'dir-link'));
  // Below the roots, staying inside them.
  symlinkSync(join(vms, 'pg01.qcow2'), join(vms, 'alias.qcow2'));
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => null,
      (e: unknown) => e,
    );

  describe('checkRepositoryRoot', () => {
    it.each([
      ['a configured root itself', repos],
      ['a directory below one', join(repos, 'main')],
      ['one that does not exist yet', join(repos, 'new', 'deeper')],
    ])('accepts %s', async (_, root) => {
      await expect(checkRepositoryRoot([vms, repos], 'repositoryPath', root)).resolves.toBe(
        undefined,
      );
    });

    it.each([
      ['/', '/', "is not one of the runner's repository roots"],
      ['a parent of the roots', base, "is not one of the runner's repository roots"],
      ['a sibling sharing the prefix', `${repos}-evil`, 'nor below one'],
      ['a directory elsewhere', elsewhere, 'nor below one'],
      ['a symlink below a root', join(repos, 'linked'), 'through a symlink'],
      ['a directory below such a symlink', join(repos, 'linked', 'x'), 'through a symlink'],
      ['a ".." detour', `${repos}/../elsewhere`, 'is not a normal absolute path'],
    ])('refuses %s, naming the field, the root and the configuration', async (_, root, why) => {
      const err = await refusal(checkRepositoryRoot([repos], 'repositoryPath', root));
      expect(err).toBeInstanceOf(PathOutsideRepositoryError);
      expect((err as Error).message).toContain(`repositoryPath ${root}`);
      expect((err as Error).message).toContain(why);
    });

    it('names the configuration in the refusal', async () => {
      const err = await refusal(checkRepositoryRoot([repos], 'repositoryPath', elsewhere));
      expect((err as Error).message).toContain(`TIDEMARK_REPOSITORY_ROOTS: ${repos}`);
    });
  });

  describe('checkSourceAllowed', () => {
    const sock = join(vms, 'pg01-qmp.sock');
    it.each([
      ['an image below a root', join(vms, 'pg01.qcow2')],
      ['one not there (the client then fails it SOURCE_UNAVAILABLE)', join(vms, 'new.qcow2')],
      ['a symlink to an image inside the roots', join(vms, 'alias.qcow2')],
      ['a live disk whose sockets are below a root', `qemu-live:${sock}?node=disk0&nbd=${sock}2`],
      ['a live disk without an NBD socket', `qemu-live:${sock}?node=disk0`],
    ])('accepts %s', async (_, source) => {
      await expect(checkSourceAllowed([repos, vms], 'disks[0].source', source)).resolves.toBe(
        undefined,
      );
    });

    it.each([
      ['an image elsewhere', join(elsewhere, 'secret.qcow2'), 'is not below the runner'],
      ['an image of a sibling sharing the prefix', join(evil, 'pg01.qcow2'), 'is not below'],
      ['the root itself', vms, 'is not below'],
      ['a symlinked image', join(vms, 'link.qcow2'), 'through a symlink'],
      ['an image below a symlinked directory', join(vms, 'dir-link', 'secret.qcow2'), 'symlink'],
      ['a ".." detour', `${vms}/../elsewhere/secret.qcow2`, 'not a normal absolute path'],
      ['a QMP socket elsewhere', `qemu-live:${elsewhere}/q.sock?node=d`, 'its QMP socket'],
      ['a QMP socket of a sibling', `qemu-live:${evil}/q.sock?node=d`, 'its QMP socket'],
      ['a QMP socket through a symlink', `qemu-live:${vms}/dir-link/q.sock?node=d`, 'symlink'],
      ['an NBD socket elsewhere', `qemu-live:${sock}?node=d&nbd=${elsewhere}/n.sock`, 'its NBD'],
      [
        'an NBD socket spelled in percent-escapes, as the client reads it',
        `qemu-live:${sock}?node=d&nbd=${encodeURIComponent(join(elsewhere, 'n.sock'))}`,
        `its NBD socket ${join(elsewhere, 'n.sock')}`,
      ],
      ['a live disk spelled wrong', `qemu-live:${sock}`, 'not a source the runner opens'],
      ['a relative path', 'vm/pg01.qcow2', 'no source driver handles'],
      ['another scheme', 'vmware://host/vm-1', 'no source driver handles'],
    ])('refuses %s, naming the field and why', async (_, source, why) => {
      const err = await refusal(checkSourceAllowed([repos, vms], 'disks[0].source', source));
      expect(err).toBeInstanceOf(SourceNotAllowedError);
      expect((err as Error).message).toContain(`disks[0].source ${source}`);
      expect((err as Error).message).toContain(why);
    });
  });

  describe('realRoots', () => {
    it('resolves the roots', async () => {
      await expect(realRoots('TIDEMARK_SOURCE_ROOTS', [vms])).resolves.toEqual([realpathSync(vms)]);
    });

    it('stops the runner at a root that is a symlink to a system directory', async () => {
      const link = join(base, 'looks-harmless');
      symlinkSync('/etc', link);
      const err = await refusal(realRoots('TIDEMARK_REPOSITORY_ROOTS', [repos, link]));
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues).toEqual([
        { path: 'TIDEMARK_REPOSITORY_ROOTS', message: expect.stringContaining('leads to /etc') },
      ]);
    });
  });

  describe('refusePaths', () => {
    const log = createLogger('test', 'silent');
    const allowed = { repository: [repos], source: [vms] };
    const start = (over: Partial<StartData['disks'][number]>, repositoryPath?: string) =>
      StartDataV1.parse({
        vmName: 'pg01',
        backupType: 'full',
        repositoryId: 'repo-1',
        repositoryPath,
        disks: [
          {
            diskKey: 'disk-0',
            source: join(vms, 'pg01.qcow2'),
            targetPath: join(repos, 'main', 'pg01', 'job-1', 'disk-0.qcow2'),
            ...over,
          },
        ],
      });
    const ledgerRoot = (root: string) => () => Promise.resolve(root);

    it('lets a job inside the roots run', async () => {
      expect(
        await refusePaths(start({}, join(repos, 'main')), allowed, ledgerRoot('/x'), log),
      ).toBeNull();
    });

    it("refuses a root outside the runner's, whether the event or the ledger names it", async () => {
      const target = join(`${repos}-evil`, 'pg01', 'job-1', 'disk-0.qcow2');
      expect(
        await refusePaths(
          start({ targetPath: target }, `${repos}-evil`),
          allowed,
          ledgerRoot(repos),
          log,
        ),
      ).toMatchObject({ code: 'PATH_OUTSIDE_REPOSITORY', retryable: false });
      const fromLedger = await refusePaths(
        start({ targetPath: target }),
        allowed,
        ledgerRoot(`${repos}-evil`),
        log,
      );
      expect(fromLedger).toMatchObject({ code: 'PATH_OUTSIDE_REPOSITORY' });
      expect(fromLedger?.message).toContain("the ledger's repository root");
    });

    it('refuses a source outside the source roots, as SOURCE_NOT_ALLOWED', async () => {
      expect(
        await refusePaths(
          start({ source: join(evil, 'pg01.qcow2') }, join(repos, 'main')),
          allowed,
          ledgerRoot(repos),
          log,
        ),
      ).toMatchObject({ code: 'SOURCE_NOT_ALLOWED', retryable: false });
    });
  });
});
