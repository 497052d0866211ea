/**
 * A repository that runs out of space: each repository here is a small tmpfs this suite mounts
 * (and unmounts, whatever happens). A full backup that cannot fit, or fills the disk half-way,
 * fails with REPOSITORY_FULL leaving no file of its own and the previous chain as it was; a
 * replication update that runs out of space leaves the replica at its last good point.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statfsSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { manifestPath, readManifest } from '@tidemark/backup-client/protocol';
import { Qcow2Target, committingPath } from '@tidemark/backup-client/target/qcow2-target';
import {
  completedDisks,
  createImage,
  MiB,
  restoreRaw,
  run,
  runClient,
  sameContent,
  tempDir,
  writeDisk,
  writeJob,
  type ClientRun,
  type ResultDisk,
} from '../support/disks';
import { filesUnder } from '../support/leftovers';

const tmp = tempDir('tidemark-diskfull-');
const mounts: string[] = [];

/** A tmpfs of `size` at `<tmp>/<name>`, unmounted in afterAll. */
function tmpfs(name: string, size: string): string {
  const dir = join(tmp.dir, name);
  mkdirSync(dir, { recursive: true });
  run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

afterAll(() => {
  for (const dir of mounts.splice(0)) {
    const r = spawnSync('umount', [dir]);
    if (r.status !== 0) spawnSync('umount', ['-l', dir]);
  }
  tmp.remove();
});

function free(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

/** Fills the filesystem of `dir` to the last block with `<dir>/filler`; its path. */
function fill(dir: string): string {
  const path = join(dir, 'filler');
  const fd = openSync(path, 'a');
  const block = Buffer.alloc(64 * 1024, 0xee);
  try {
    for (let b = block; ;) {
      try {
        writeSync(fd, b);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        if (b.length <= 4096) break;
        b = b.subarray(0, b.length / 2);
      }
    }
  } finally {
    closeSync(fd);
  }
  return path;
}

const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

/** The source as it reads now, as a raw file outside every repository. */
function snapshotRaw(source: string, name: string): string {
  const raw = join(tmp.dir, `${name}.raw`);
  run('qemu-img', ['convert', '-O', 'raw', source, raw]);
  return raw;
}

function client(
  jobId: string,
  job: Parameters<typeof writeJob>[2],
  previous?: Record<string, string>,
  opts: { env?: Record<string, string>; onCopying?: () => void } = {},
): Promise<ClientRun> {
  const jobFile = writeJob(tmp.dir, jobId, job);
  let told = false;
  return runClient(
    ['backup', '--job', jobFile],
    {
      TIDEMARK_JOB_ID: jobId,
      TIDEMARK_PREVIOUS_CHANGE_ID: previous ? JSON.stringify(previous) : undefined,
      TIDEMARK_PROGRESS_INTERVAL_MS: '100',
      TIDEMARK_CANARY_BLOCKS: '0',
      ...opts.env,
    },
    {
      onLine: (line) => {
        const disks = line.disks as Array<{ bytesDone: number }> | undefined;
        if (told || line.type !== 'progress' || !disks?.some((d) => d.bytesDone > 0)) return;
        told = true;
        opts.onCopying?.();
      },
    },
  );
}

function expectRepositoryFull(r: ClientRun, dir: string): void {
  expect(r.code).toBe(1);
  expect(r.result).toMatchObject({ status: 'failed', code: 'REPOSITORY_FULL', retryable: false });
  expect(r.result?.message).toContain(dir);
  expect(r.result?.message).toMatch(/\d+ bytes free/);
}

describe('a full backup into a repository without the room for it', () => {
  let repo: string;
  const vm = join(tmp.dir, 'vm-a.qcow2');
  const target = (job: string) => join(repo, 'vm1', job, 'd0.qcow2');
  let chain: ResultDisk[] = [];
  let chainSums: Record<string, string> = {};
  let chainRaw: string;

  beforeAll(async () => {
    repo = tmpfs('repo-a', '16m');
    createImage(vm, 64 * MiB);
    writeDisk(vm, [{ offset: 0, length: 2 * MiB, pattern: 0x11 }]);
    const [full] = completedDisks(
      await client('a-full', {
        backupType: 'full',
        disks: [{ diskKey: 'd0', source: vm, targetPath: target('a-full') }],
      }),
    );
    writeDisk(vm, [{ offset: 4 * MiB, length: 1 * MiB, pattern: 0x12 }]);
    const [inc] = completedDisks(
      await client(
        'a-inc',
        {
          backupType: 'incremental',
          disks: [
            {
              diskKey: 'd0',
              source: vm,
              targetPath: target('a-inc'),
              backingPath: full?.targetPath ?? null,
            },
          ],
        },
        { d0: full?.changeId as string },
      ),
    );
    chain = [full as ResultDisk, inc as ResultDisk];
    chainRaw = snapshotRaw(vm, 'vm-a-chain');
    chainSums = Object.fromEntries(filesUnder(repo, /./).map((f) => [f, sha(f)] as const));
  });

  /** Nothing but the chain is in the repository, byte for byte, and its top restores. */
  async function expectChainIntact(name: string): Promise<void> {
    expect(Object.fromEntries(filesUnder(repo, /./).map((f) => [f, sha(f)] as const))).toEqual(
      chainSums,
    );
    const restored = await restoreRaw(tmp.dir, chain[1]?.targetPath as string, name);
    expect(sameContent(chainRaw, restored).same).toBe(true);
    rmSync(restored);
  }

  it('is refused before a byte is copied: REPOSITORY_FULL naming the repository and its free bytes', async () => {
    writeDisk(vm, [{ offset: 8 * MiB, length: 40 * MiB, pattern: 0x13 }]); // more than 16 MiB
    const before = free(repo);
    const r = await client('a-full2', {
      backupType: 'full',
      disks: [{ diskKey: 'd0', source: vm, targetPath: target('a-full2') }],
    });
    expectRepositoryFull(r, repo);
    expect(r.result?.message).toMatch(/needs about \d+/);
    const copied = r.lines.flatMap((l) =>
      l.type === 'progress' ? (l.disks as Array<{ bytesDone: number }>) : [],
    );
    expect(copied.every((d) => d.bytesDone === 0)).toBe(true);
    expect(free(repo)).toBe(before);
    await expectChainIntact('a-after-refused');
  });

  it('that fills the repository half-way fails REPOSITORY_FULL, leaving no partial or orphan file', async () => {
    // 8 MiB of data (it fits), copied at 4 MB/s; the filesystem is filled once the copy is under way.
    const small = join(tmp.dir, 'vm-a-small.qcow2');
    createImage(small, 16 * MiB);
    writeDisk(small, [{ offset: 0, length: 8 * MiB, pattern: 0x14 }]);
    let filler = '';
    const r = await client(
      'a-full3',
      {
        backupType: 'full',
        disks: [{ diskKey: 'd0', source: small, targetPath: target('a-full3') }],
      },
      undefined,
      { env: { TIDEMARK_COPY_MAX_MBPS: '4' }, onCopying: () => (filler = fill(repo)) },
    );
    expect(filler).not.toBe('');
    rmSync(filler);
    expectRepositoryFull(r, repo);
    expect(r.result?.message).toMatch(/No space left on device|ENOSPC/);
    await expectChainIntact('a-after-filled');
  });
});

describe('a replication update that runs out of space', () => {
  let repo: string;
  const src = join(tmp.dir, 'rep-src.qcow2');
  let replica: string;
  let last: ResultDisk;
  let good: string;
  const job = (backupType: 'full' | 'incremental') => ({
    jobType: 'replication' as const,
    backupType,
    disks: [{ diskKey: 'd0', source: src, targetPath: replica }],
  });

  beforeAll(async () => {
    repo = tmpfs('repo-r', '24m');
    replica = join(repo, 'vm1', 'd0.qcow2');
    createImage(src, 32 * MiB);
    writeDisk(src, [{ offset: 0, length: 4 * MiB, pattern: 0x21 }]);
    [last] = completedDisks(await client('r-1', job('full'))) as [ResultDisk];
    writeDisk(src, [{ offset: 1 * MiB, length: 64 * 1024, pattern: 0x22 }]);
    [last] = completedDisks(await client('r-2', job('incremental'), { d0: last.changeId })) as [
      ResultDisk,
    ];
    good = snapshotRaw(src, 'rep-good');
    expect(sameContent(good, replica).same).toBe(true);
  });

  /** The replica is the last good replication's point, alone, and restores as it. */
  async function expectLastGoodPoint(name: string): Promise<void> {
    expect(filesUnder(repo, /./).sort()).toEqual([replica, manifestPath(replica)].sort());
    expect(sameContent(good, replica).same).toBe(true);
    run('qemu-img', ['check', '-q', replica]);
    expect(await readManifest(replica)).toMatchObject({
      changeId: last.changeId,
    });
    const restored = await restoreRaw(tmp.dir, replica, name);
    expect(sameContent(good, restored).same).toBe(true);
    rmSync(restored);
  }

  it('fails REPOSITORY_FULL mid-copy; the replica still restores its last good point, and the next run brings it up to date', async () => {
    // Overwrites of blocks the replica holds and new ones: an update in place would mix them.
    writeDisk(src, [
      { offset: 0, length: 4 * MiB, pattern: 0x23 },
      { offset: 8 * MiB, length: 4 * MiB, pattern: 0x24 },
    ]);
    let filler = '';
    const r = await client(
      'r-3',
      job('incremental'),
      { d0: last.changeId },
      {
        env: { TIDEMARK_COPY_MAX_MBPS: '4', TIDEMARK_COPY_IN_FLIGHT: '2' },
        onCopying: () => (filler = fill(repo)),
      },
    );
    expect(filler).not.toBe('');
    rmSync(filler);
    expectRepositoryFull(r, repo);
    await expectLastGoodPoint('r-after-full');

    // Space freed: the next replication, from the ledger's last good point, brings it up to date.
    const [next] = completedDisks(await client('r-4', job('incremental'), { d0: last.changeId }));
    expect(sameContent(src, replica).same).toBe(true);
    expect(filesUnder(repo, /./).sort()).toEqual([replica, manifestPath(replica)].sort());
    last = next as ResultDisk;
    good = snapshotRaw(src, 'rep-good-2');
  });

  it('never starts a commit without the room for it: the update is dropped, the replica untouched', async () => {
    const target = await Qcow2Target.open(
      { kind: 'in-place', path: replica, backingPath: null },
      32 * MiB,
      tmp.dir,
    );
    let manifestWritten = false;
    try {
      // 6 MiB of new clusters written and flushed into the update; then the disk fills, so
      // committing them (which would need new clusters in the replica) has no room.
      await target.writer.write(16 * MiB, Buffer.alloc(6 * MiB, 0x31));
      await target.writer.flush();
      const filler = fill(repo);
      try {
        await expect(
          target.finish(async () => {
            manifestWritten = true;
          }),
        ).rejects.toMatchObject({ code: 'REPOSITORY_FULL', retryable: false });
      } finally {
        await target.abort();
        rmSync(filler);
      }
    } finally {
      await target.abort();
    }
    expect(manifestWritten).toBe(false);
    await expectLastGoodPoint('r-after-commit-refused');
  });

  it('finishes an update whose commit was stopped before the next update runs', async () => {
    // What a client killed in the middle of `qemu-img commit` leaves: the update's overlay under
    // its committing name, part of it already in the replica.
    writeDisk(src, [{ offset: 20 * MiB, length: 1 * MiB, pattern: 0x41 }]);
    const overlay = committingPath(replica);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', replica, '-F', 'qcow2', overlay]);
    writeDisk(overlay, [{ offset: 20 * MiB, length: 1 * MiB, pattern: 0x41 }]);
    writeDisk(replica, [{ offset: 20 * MiB, length: 256 * 1024, pattern: 0x41 }]);
    const [next] = completedDisks(await client('r-5', job('incremental'), { d0: last.changeId }));
    expect(next?.changeId).not.toBe(last.changeId);
    expect(sameContent(src, replica).same).toBe(true);
    expect(filesUnder(repo, /./).sort()).toEqual([replica, manifestPath(replica)].sort());
  });
});
