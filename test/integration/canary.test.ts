/**
 * The CBT canary with the real backup client and qemu tools: writes that bypass a disk's change
 * tracking (`qemu-img bitmap --disable`, a write, `--enable`) are caught at the rate the
 * sampling predicts, 1 − (1 − f)^n, and a disk whose tracking saw every write never raises an
 * alarm. Seeded trials (TIDEMARK_CANARY_TRIAL_SEED replays); counts in test/results/canary.json.
 */
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  MiB,
  completedDisks,
  createImage,
  rng,
  run,
  runClient,
  tempDir,
  trackingBitmap,
  writeDisk,
  writeJob,
} from '../support/disks';

jest.setTimeout(600_000);

const TRIALS = Number(process.env.TIDEMARK_CANARY_TRIALS ?? 100);
const SEED = Number(process.env.TIDEMARK_CANARY_TRIAL_SEED ?? 20261202);
const BLOCK = 64 * 1024;
const DISK = 64 * MiB; // 1024 blocks
const SAMPLE = 64; // the client's default
const BYPASSED_BLOCKS = 103; // f = 103/1024 ≈ 10.06 %

const tmp = tempDir('tidemark-canary-');
afterAll(() => tmp.remove());

interface Base {
  image: string;
  fullTarget: string;
  changeId: string;
}

/** A source disk with data and its full backup: every trial starts from a copy of both. */
async function base(): Promise<Base> {
  const image = join(tmp.dir, 'base.qcow2');
  createImage(image, DISK);
  writeDisk(image, [
    { offset: 0, length: 8 * MiB, pattern: 0x11 },
    { offset: 40 * MiB, length: 4 * MiB, pattern: 0x12 },
  ]);
  const fullTarget = join(tmp.dir, 'full', 'd0.qcow2');
  const job = writeJob(tmp.dir, 'full', {
    backupType: 'full',
    disks: [{ diskKey: 'd0', source: image, targetPath: fullTarget }],
  });
  const [disk] = completedDisks(
    await runClient(['backup', '--job', job], { TIDEMARK_JOB_ID: 'full' }),
  );
  return { image, fullTarget, changeId: disk?.changeId as string };
}

/** One incremental of a fresh copy of the source; `bypass` writes behind the tracking first. */
async function trial(
  b: Base,
  i: number,
  bypass: boolean,
): Promise<{ mismatched: number; sampled: number }> {
  const dir = join(tmp.dir, `${bypass ? 'b' : 'n'}${i}`);
  mkdirSync(dir, { recursive: true });
  const source = join(dir, 'src.qcow2');
  copyFileSync(b.image, source);
  const random = rng(SEED + i * 2 + (bypass ? 1 : 0));
  if (bypass) {
    const bitmap = trackingBitmap(b.changeId);
    const first = Math.floor(random() * (DISK / BLOCK - BYPASSED_BLOCKS + 1));
    run('qemu-img', ['bitmap', '--disable', source, bitmap]);
    writeDisk(source, [{ offset: first * BLOCK, length: BYPASSED_BLOCKS * BLOCK, pattern: 0x5c }]);
    run('qemu-img', ['bitmap', '--enable', source, bitmap]);
  } else {
    // Writes the tracking sees: copied, and never sampled.
    const at = Math.floor(random() * (DISK / BLOCK - 16)) * BLOCK;
    writeDisk(source, [{ offset: at, length: 16 * BLOCK, pattern: 0x5d }]);
  }
  const job = writeJob(dir, 'inc', {
    backupType: 'incremental',
    disks: [
      {
        diskKey: 'd0',
        source,
        targetPath: join(dir, 'inc', 'd0.qcow2'),
        backingPath: b.fullTarget,
        previousChangeId: b.changeId,
      },
    ],
  });
  const [disk] = completedDisks(
    await runClient(['backup', '--job', job], {
      TIDEMARK_JOB_ID: `inc-${i}`,
      TIDEMARK_CANARY_SEED: String(SEED + i),
    }),
  );
  rmSync(dir, { recursive: true, force: true });
  const canary = (disk as unknown as { canary: { sampledBytes: number; mismatchedBytes: number } })
    .canary;
  return { mismatched: canary.mismatchedBytes, sampled: canary.sampledBytes };
}

/** Runs `n` trials two at a time (two cores). */
async function trials(b: Base, bypass: boolean) {
  const results: Array<{ mismatched: number; sampled: number }> = [];
  let next = 0;
  await Promise.all(
    [0, 1].map(async () => {
      while (next < TRIALS) results.push(await trial(b, next++, bypass));
    }),
  );
  return results;
}

describe('the CBT canary', () => {
  it('catches writes that bypassed the tracking as often as predicted, and never cries wolf', async () => {
    const b = await base();
    const bypassed = await trials(b, true);
    const clean = await trials(b, false);
    const f = BYPASSED_BLOCKS / (DISK / BLOCK);
    const predicted = 1 - (1 - f) ** SAMPLE;
    const detected = bypassed.filter((r) => r.mismatched > 0).length;
    const falseAlarms = clean.filter((r) => r.mismatched > 0).length;
    const summary = {
      seed: SEED,
      disk: { bytes: DISK, blockBytes: BLOCK },
      sampledBlocksPerDisk: SAMPLE,
      bypassedFraction: Number(f.toFixed(4)),
      predictedDetectionRate: Number(predicted.toFixed(5)),
      bypassTrials: bypassed.length,
      detected,
      meanMismatchedBytesWhenDetected: Math.round(
        bypassed.filter((r) => r.mismatched > 0).reduce((s, r) => s + r.mismatched, 0) /
          Math.max(1, detected),
      ),
      noBypassTrials: clean.length,
      falseAlarms,
      sampledBytesPerTrial: bypassed[0]?.sampled,
    };
    mkdirSync(join(__dirname, '..', 'results'), { recursive: true });
    writeFileSync(
      join(__dirname, '..', 'results', 'canary.json'),
      `${JSON.stringify(summary, null, 2)}\n`,
    );
    process.stdout.write(`[canary] ${JSON.stringify(summary)}\n`);
    expect(bypassed.every((r) => r.sampled === SAMPLE * BLOCK)).toBe(true);
    expect(detected).toBeGreaterThanOrEqual(Math.ceil(TRIALS * 0.99));
    expect(falseAlarms).toBe(0);
  });
});
