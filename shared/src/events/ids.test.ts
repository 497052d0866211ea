import { DirPath, DiskSource } from './ids';

describe('DiskSource', () => {
  it.each([
    '/var/lib/vms/pg01/disk-0.qcow2',
    'qemu-live:/run/vm/pg01-qmp.sock?node=disk0',
    'qemu-live:/run/vm/pg01-qmp.sock?node=drive-virtio.0&nbd=/run/vm/pg01-nbd.sock',
  ])('accepts %s', (source) => {
    expect(DiskSource.safeParse(source).success).toBe(true);
  });

  it.each([
    ['a relative image path', 'disks/pg01.qcow2'],
    ['a relative QMP socket', 'qemu-live:run/qmp.sock?node=disk0'],
    ['a live disk without its node', 'qemu-live:/run/qmp.sock'],
    ['a node name with a separator', 'qemu-live:/run/qmp.sock?node=a/b'],
    ['a relative NBD socket', 'qemu-live:/run/qmp.sock?node=disk0&nbd=nbd.sock'],
    ['another parameter', 'qemu-live:/run/qmp.sock?node=disk0&x=1'],
    ['another scheme', 'vmware:/vm/1'],
    ['nothing', ''],
  ])('refuses %s, saying what it must be', (_, source) => {
    const r = DiskSource.safeParse(source);
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.message).toMatch(/must/);
  });
});

describe('DirPath', () => {
  it.each(['/', '/srv/tidemark', '/var/lib/tidemark/repo-1'])('accepts %s', (path) => {
    expect(DirPath.safeParse(path).success).toBe(true);
  });

  it.each([
    ['a relative path', 'srv/tidemark', 'absolute'],
    ['a ".." segment', '/srv/../etc', 'normal path'],
    ['a "." segment', '/srv/./tidemark', 'normal path'],
    ['an empty segment', '/srv//tidemark', 'normal path'],
    ['a trailing slash', '/srv/tidemark/', 'normal path'],
    ['a NUL byte', '/srv/tide\0mark', 'NUL'],
  ])('refuses %s, saying why', (_, path, why) => {
    const r = DirPath.safeParse(path);
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.message).join(' ')).toContain(why);
  });
});
