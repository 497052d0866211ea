/**
 * Backups of a running disk: qemu-storage-daemon serves a qcow2 image to a "guest" that keeps
 * writing over NBD while the client backs it up through QMP (bitmap rotation + fleece).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
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
