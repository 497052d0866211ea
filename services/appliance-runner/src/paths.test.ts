import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkInsideRepository, PathOutsideRepositoryError } from './paths';

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
