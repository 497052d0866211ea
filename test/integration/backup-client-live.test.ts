/**
 * Backups of a running disk: qemu-storage-daemon serves a qcow2 image to a "guest" that keeps
 * writing over NBD while the client backs it up through QMP (bitmap rotation + fleece).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { QmpClient } from '@tidemark/backup-client/qmp/client';
import {
  clientMain,
  bitmapNames,
  trackingBitmap,
  completedDisks,
  createImage,
  MiB,
  restoreRaw,
  runClient,
  sameContent,
  startStorageDaemon,
  tempDir,
  writeDisk,
  writeJob,
  type StorageDaemon,
} from '../support/disks';
import { waitFor } from '../support/env';
import { Guest, pointInTime, stamps } from '../support/guest';

const tmp = tempDir('tidemark-live-');
const daemons: StorageDaemon[] = [];
afterAll(async () => {
  for (const d of daemons) await d.stop('SIGKILL');
  tmp.remove();
});

const restore = (top: string, name: string): Promise<string> => restoreRaw(tmp.dir, top, name);

describe('a live disk with a guest writing during the backup', () => {
  it('backs up a point in time, and the next incremental too', async () => {
    const image = join(tmp.dir, 'live.qcow2');
    createImage(image, 24 * MiB + 512);
    writeDisk(image, [{ offset: 12 * MiB, length: 4 * MiB, pattern: 0x5c }]);
    const daemon = await startStorageDaemon(image, tmp.dir, 'live');
    daemons.push(daemon);
    const guest = await Guest.attach(daemon);

    const runBackup = async (
      jobId: string,
      backupType: 'full' | 'incremental',
      parent?: { changeId: string; targetPath: string },
      writing = true,
    ) => {
      if (writing) guest.start(jobId.length * 7919);
      while (writing && guest.writes.length < 50) await new Promise((r) => setTimeout(r, 5));
      const before = guest.writes.length;
      const jobFile = writeJob(tmp.dir, jobId, {
        backupType,
        disks: [
          {
            diskKey: 'd0',
            source: daemon.source,
            targetPath: join(tmp.dir, 'repo', jobId, 'd0.qcow2'),
            backingPath: parent?.targetPath ?? null,
          },
        ],
      });
      const r = await runClient(['backup', '--job', jobFile], {
        TIDEMARK_JOB_ID: jobId,
        TIDEMARK_PREVIOUS_CHANGE_ID: parent ? JSON.stringify({ d0: parent.changeId }) : undefined,
      });
      const duringEnd = guest.writes.length;
      while (writing && guest.writes.length < duringEnd + 50)
        await new Promise((r) => setTimeout(r, 5));
      if (writing) await guest.stop();
      const [disk] = completedDisks(r);
      const k = pointInTime(stamps(await restore(disk?.targetPath as string, jobId)), guest.writes);
      // The point in time lies between writes the guest made before and after the client ran.
      expect(k).toBeGreaterThanOrEqual(before);
      expect(k).toBeLessThanOrEqual(duringEnd);
      return disk as { changeId: string; targetPath: string };
    };

    const full = await runBackup('live-full', 'full');
    const inc = await runBackup('live-inc', 'incremental', full);
    expect(inc.changeId.split('/')[0]).toBe(full.changeId.split('/')[0]);

    // With the guest quiet, one more incremental equals the disk exactly.
    const last = await runBackup('live-inc2', 'incremental', inc, false);
    await guest.detach();
    await daemon.stop('SIGTERM');
    expect(sameContent(image, last.targetPath)).toEqual({
      same: true,
      output: 'Images are identical.',
    });
    // Every fleece overlay and export is gone; only the newest bitmap is left on the disk.
    expect(bitmapNames(image).map((b) => b.name)).toEqual([trackingBitmap(last.changeId)]);
    expect(existsSync(join(tmp.dir, 'repo', 'live-inc2', 'd0.qcow2.partial'))).toBe(false);
  });

  it('a daemon killed with its bitmaps unsaved makes the next incremental FULL_BACKUP_REQUIRED', async () => {
    const image = join(tmp.dir, 'killed.qcow2');
    createImage(image, 8 * MiB);
    writeDisk(image, [{ offset: 0, length: 1 * MiB, pattern: 0x12 }]);
    let daemon = await startStorageDaemon(image, tmp.dir, 'killed1');
    daemons.push(daemon);
    const fullJob = writeJob(tmp.dir, 'killed-full', {
      backupType: 'full',
      disks: [{ diskKey: 'd0', source: daemon.source, targetPath: join(tmp.dir, 'k/full.qcow2') }],
    });
    const [full] = completedDisks(
      await runClient(['backup', '--job', fullJob], { TIDEMARK_JOB_ID: 'killed-full' }),
    );
    await daemon.stop('SIGKILL');
    daemon = await startStorageDaemon(image, tmp.dir, 'killed2');
    daemons.push(daemon);
    const incJob = writeJob(tmp.dir, 'killed-inc', {
      backupType: 'incremental',
      disks: [
        {
          diskKey: 'd0',
          source: daemon.source,
          targetPath: join(tmp.dir, 'k/inc.qcow2'),
          backingPath: full?.targetPath,
          previousChangeId: full?.changeId,
        },
      ],
    });
    const r = await runClient(['backup', '--job', incJob], { TIDEMARK_JOB_ID: 'killed-inc' });
    expect(r.code).toBe(1);
    expect(r.result).toMatchObject({ status: 'failed', code: 'FULL_BACKUP_REQUIRED' });
    expect(existsSync(join(tmp.dir, 'k/inc.qcow2'))).toBe(false);
    await daemon.stop('SIGTERM');
  });
});

describe('a live disk backed up and replicated at once', () => {
  it("runs both copies side by side: neither holds the daemon's one-client monitor while it copies", async () => {
    // qemu-storage-daemon's QMP monitor serves one client at a time. A client that kept it for
    // its whole copy (12 s here) made the other chain's job on the disk wait past its handshake
    // timeout and fail SOURCE_UNAVAILABLE.
    const image = join(tmp.dir, 'both.qcow2');
    createImage(image, 32 * MiB);
    writeDisk(image, [{ offset: 0, length: 24 * MiB, pattern: 0x3b }]);
    const daemon = await startStorageDaemon(image, tmp.dir, 'both');
    daemons.push(daemon);
    const run = (jobType: 'backup' | 'replication') => {
      const jobId = `both-${jobType}`;
      const job = writeJob(tmp.dir, jobId, {
        jobType,
        backupType: 'full',
        disks: [
          { diskKey: 'd0', source: daemon.source, targetPath: join(tmp.dir, jobId, 'd0.qcow2') },
        ],
      });
      return runClient(['backup', '--job', job], {
        TIDEMARK_JOB_ID: jobId,
        TIDEMARK_COPY_MAX_MBPS: '2',
      });
    };
    const results = await Promise.all([run('backup'), run('replication')]);
    expect(results.map((r) => r.result)).toEqual([
      expect.objectContaining({ status: 'completed' }),
      expect.objectContaining({ status: 'completed' }),
    ]);
    await daemon.stop('SIGTERM'); // it holds the image
    for (const r of results) {
      const [disk] = completedDisks(r);
      expect(sameContent(image, disk?.targetPath as string).same).toBe(true);
    }
  });
});

describe('a live disk whose runner is SIGKILLed mid-copy', () => {
  it('is left as it was: the client, its log pipe gone too, still ends its export, block job and fleece overlay', async () => {
    const image = join(tmp.dir, 'orphan.qcow2');
    createImage(image, 64 * MiB);
    writeDisk(image, [{ offset: 0, length: 32 * MiB, pattern: 0x3c }]);
    const daemon = await startStorageDaemon(image, tmp.dir, 'orphan');
    daemons.push(daemon);
    const work = join(tmp.dir, 'orphan-work');
    mkdirSync(work);
    const jobFile = writeJob(tmp.dir, 'orphan', {
      backupType: 'full',
      disks: [{ diskKey: 'd0', source: daemon.source, targetPath: join(tmp.dir, 'o/d0.qcow2') }],
    });
    // A stand-in runner: the client's stdin, stdout and stderr are pipes to it, as under the
    // appliance-runner; it passes the client's pid and its stdout on.
    const runner = spawn(
      process.execPath,
      [
        '-e',
        `const c = require('node:child_process').spawn(process.execPath, [${JSON.stringify(clientMain)}, 'backup', '--job', ${JSON.stringify(jobFile)}], { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH, TIDEMARK_JOB_ID: 'orphan', TIDEMARK_WORK_DIR: ${JSON.stringify(work)}, TIDEMARK_EXIT_WITH_PARENT: '1', TIDEMARK_COPY_MAX_MBPS: '4', TIDEMARK_PROGRESS_INTERVAL_MS: '100' } });
         console.log(JSON.stringify({ pid: c.pid }));
         c.stdout.pipe(process.stdout);
         c.stderr.resume();`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let clientPid = 0;
    let copying = false;
    runner.stdout.setEncoding('utf8').on('data', (text: string) => {
      for (const line of text.split('\n').filter(Boolean)) {
        const msg = JSON.parse(line) as { pid?: number; type?: string; phase?: string };
        if (msg.pid) clientPid = msg.pid;
        if (msg.type === 'progress' && msg.phase === 'copying') copying = true;
      }
    });
    await waitFor('the client copying', async () => copying && clientPid > 0, 20_000);
    runner.kill('SIGKILL');
    const gone = () =>
      !existsSync(`/proc/${clientPid}`) || readFileSync(`/proc/${clientPid}/cmdline`).length === 0;
    await waitFor('the client to end', async () => gone(), 20_000, 50);

    const qmp = await QmpClient.connect(daemon.qmpSocket);
    try {
      expect(await qmp.execute('query-block-jobs')).toEqual([]);
      const exports = await qmp.execute<Array<{ id: string }>>('query-block-exports');
      expect(exports.map((e) => e.id)).toEqual(['guest']);
      const nodes = await qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes', {
        flat: true,
      });
      expect(nodes.map((n) => n['node-name']).filter((n) => n.startsWith('tidemark'))).toEqual([]);
    } finally {
      await qmp.close();
    }
    // Its work directory (with the fleece overlay) is gone too.
    expect(readdirSync(work)).toEqual([]);
    await daemon.stop('SIGTERM');
  });
});
