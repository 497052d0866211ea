/**
 * Large disks: a 16 TiB sparse qcow2 with data at 100 scattered places is backed up full and
 * incremental by the real client, restored and verified, and its manifests are read back in a
 * child process whose peak RSS is measured. A manifest of a disk *full* of data (one extent per
 * 512 KiB, where version 1 reached V8's string limit) is written and read the same way, and a
 * version 1 manifest of (at most 256 GiB of) that disk read for comparison. Figures in
 * test/results/manifest-16tib.json. TIDEMARK_MANIFEST_DENSE_TIB sets the size of the dense disk
 * (default 1; 16 takes ~20 s more and 1.2 GB of disk).
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  ManifestReader,
  manifestPath,
  readManifest,
  type Manifest,
} from '@tidemark/backup-client/protocol';
import {
  clientMain,
  completedDisks,
  createImage,
  GiB,
  KiB,
  MiB,
  rng,
  runClient,
  sameContent,
  tempDir,
  writeDisk,
  writeJob,
  type DiskWrite,
} from '../support/disks';

const TiB = 1024 * GiB;
const SIZE = 16 * TiB;
const DENSE_TIB = Number(process.env.TIDEMARK_MANIFEST_DENSE_TIB ?? '1');
const dist = dirname(clientMain);
/** Largest disk whose version 1 manifest is written for comparison. */
const V1_MAX = 256 * GiB;

const tmp = tempDir('tidemark-16tib-');
afterAll(() => tmp.remove());

interface Measured {
  seconds: number;
  maxRssKiB: number;
  [key: string]: unknown;
}

/** Runs `code` in a fresh node (the compiled client's modules under `dist`); its JSON answer. */
function child(code: string, args: string[]): Measured {
  const r = spawnSync(process.execPath, ['-e', code, dist, ...args], {
    encoding: 'utf8',
    maxBuffer: 16 * MiB,
  });
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Measured;
}

/** Peak RSS of a node that loads the manifest module and does nothing else. */
const BASELINE = `require(require('path').join(process.argv[1], 'protocol.js'));
console.log(JSON.stringify({ seconds: 0, maxRssKiB: process.resourceUsage().maxRSS }));`;

/** Reads one manifest in full (every line checked), as verify and the runner do. */
const READ = `const { readManifest } = require(require('path').join(process.argv[1], 'protocol.js'));
(async () => {
  const t0 = performance.now();
  const m = await readManifest(process.argv[2]);
  console.log(JSON.stringify({ seconds: (performance.now() - t0) / 1000,
    maxRssKiB: process.resourceUsage().maxRSS, version: m.version, dataExtents: m.dataExtents,
    dataBytes: m.dataBytes }));
})().catch((e) => { console.error(e); process.exit(1); });`;

/** Writes the manifest of a disk full of data through the client's ManifestWriter. */
const WRITE_DENSE = `const { ManifestWriter } = require(require('path').join(process.argv[1], 'manifest.js'));
const [image, size] = [process.argv[2], Number(process.argv[3])];
(async () => {
  const t0 = performance.now();
  const w = await ManifestWriter.create(image, { jobId: 'dense', jobType: 'backup',
    diskKey: 'd0', changeId: 'u/1', baseChangeId: null, size, backingPath: null,
    fullReason: null, digest: 'xxh128' });
  for (let at = 0, i = 0; at < size; at += 524288, i++)
    await w.add({ offset: at, length: 524288, digest: i.toString(16).padStart(32, '0') });
  await w.finish({ canary: null, createdAt: new Date().toISOString() });
  await w.commit();
  console.log(JSON.stringify({ seconds: (performance.now() - t0) / 1000,
    maxRssKiB: process.resourceUsage().maxRSS }));
})().catch((e) => { console.error(e); process.exit(1); });`;

/** A version 1 manifest of a disk full of data, written in pieces (the old client built one string). */
function writeDenseV1(image: string, size: number): void {
  const fd = openSync(manifestPath(image), 'w');
  const head = JSON.stringify({
    format: 'tidemark-manifest',
    version: 1,
    jobId: 'dense',
    jobType: 'backup',
    diskKey: 'd0',
    changeId: 'u/1',
    baseChangeId: null,
    size,
    backingPath: null,
    fullReason: null,
    canary: null,
    createdAt: new Date().toISOString(),
    digest: 'xxh128',
  });
  writeSync(fd, `${head.slice(0, -1)},"written":[`);
  let piece: string[] = [];
  for (let at = 0, i = 0; at < size; at += 512 * KiB, i++) {
    piece.push(JSON.stringify([at, 512 * KiB, i.toString(16).padStart(32, '0')]));
    if (piece.length === 10_000 || at + 512 * KiB >= size) {
      writeSync(fd, `${i >= piece.length ? ',' : ''}${piece.join(',')}`);
      piece = [];
    }
  }
  writeSync(fd, ']}');
  closeSync(fd);
}

/**
 * `count` writes of 4 KiB–1 MiB at cluster-aligned offsets, each in its own 16 GiB slot of the
 * disk (so none overlap).
 */
function scattered(count: number, seed: number, pattern: number): DiskWrite[] {
  const random = rng(seed);
  const slot = 16 * GiB;
  const slots = new Set<number>();
  while (slots.size < count) slots.add(Math.floor(random() * (SIZE / slot)));
  return [...slots].map((s, i) => ({
    offset: s * slot + Math.floor(random() * (slot / (64 * KiB) - 16)) * 64 * KiB,
    length: [4 * KiB, 64 * KiB, 300 * KiB, 1 * MiB][i % 4] as number,
    pattern: ((pattern + i) % 255) + 1,
  }));
}

const totals = (m: Manifest) => ({
  dataExtents: m.dataExtents,
  dataBytes: m.dataBytes,
  zeroRanges: m.zeroRanges,
  zeroBytes: m.zeroBytes,
});
const round = (seconds: number): number => Math.round(seconds * 100) / 100;

async function timed<T>(step: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const t0 = performance.now();
  const value = await step();
  return { value, seconds: round((performance.now() - t0) / 1000) };
}

describe('a 16 TiB sparse disk with data at 100 scattered places', () => {
  it('backs up full and incremental, restores and verifies, and its manifests read back in bounded memory', async () => {
    const src = join(tmp.dir, 'big.qcow2');
    createImage(src, SIZE);
    const first = scattered(100, 20261416, 0x10);
    writeDisk(src, first);
    const repo = join(tmp.dir, 'repo');
    const backup = (jobId: string, job: Parameters<typeof writeJob>[2], prev?: string) =>
      runClient(['backup', '--job', writeJob(tmp.dir, jobId, job)], {
        TIDEMARK_JOB_ID: jobId,
        TIDEMARK_PREVIOUS_CHANGE_ID: prev,
      });

    const fullPath = join(repo, 'full.qcow2');
    const full = await timed(() =>
      backup('big-full', {
        backupType: 'full',
        disks: [{ diskKey: 'd0', source: src, targetPath: fullPath }],
      }),
    );
    const [fullDisk] = completedDisks(full.value);
    expect(fullDisk?.bytesTotal).toBe(SIZE);
    const written = first.reduce((s, w) => s + w.length, 0);
    // Only the data is copied (whole 64 KiB clusters around each write).
    expect(fullDisk?.bytesTransferred).toBeGreaterThanOrEqual(written);
    expect(fullDisk?.bytesTransferred).toBeLessThanOrEqual(written + 200 * 64 * KiB);
    expect(sameContent(src, fullPath).same).toBe(true);

    // More writes, a range zeroed and one discarded over data of the full.
    const more = scattered(100, 20261417, 0x80);
    const zeroed = { offset: (first[0] as DiskWrite).offset, length: 64 * KiB };
    const discarded = { offset: (first[3] as DiskWrite).offset, length: 1 * MiB };
    writeDisk(src, [...more, { ...zeroed, pattern: 'zero' }, { ...discarded, pattern: 'discard' }]);
    const incPath = join(repo, 'inc.qcow2');
    const inc = await timed(() =>
      backup(
        'big-inc',
        {
          backupType: 'incremental',
          disks: [{ diskKey: 'd0', source: src, targetPath: incPath, backingPath: fullPath }],
        },
        fullDisk?.changeId,
      ),
    );
    const [incDisk] = completedDisks(inc.value);
    expect(incDisk?.canary).toMatchObject({ mismatchedBytes: 0 });

    const restoredPath = join(tmp.dir, 'restored.qcow2');
    const restore = await timed(() =>
      runClient(['restore', '--from', incPath, '--to', restoredPath, '--format', 'qcow2'], {}),
    );
    expect(restore.value.code).toBe(0);
    const compare = await timed(async () => sameContent(src, restoredPath));
    expect(compare.value).toEqual({ same: true, output: 'Images are identical.' });
    const verify = await timed(() => runClient(['verify', incPath], {}));
    expect(verify.value.result).toMatchObject({ status: 'ok' });
    const files = verify.value.result?.files as Array<{ problems: string[] }>;
    expect(files.map((f) => f.problems)).toEqual([[], []]);

    // The manifests: what was copied, and read back in a child whose peak RSS is measured.
    const fullManifest = await readManifest(fullPath);
    const incManifest = await readManifest(incPath);
    expect(fullManifest).toMatchObject({ version: 2, size: SIZE, baseChangeId: null });
    expect(fullManifest.dataBytes).toBe(fullDisk?.bytesTransferred);
    expect(incManifest.dataBytes).toBe(incDisk?.bytesTransferred);
    expect(incManifest.zeroBytes).toBeGreaterThanOrEqual(zeroed.length + discarded.length);
    const baseline = child(BASELINE, []);
    const readFull = child(READ, [fullPath]);
    const readInc = child(READ, [incPath]);
    // Version 1 of the same manifest, read by the version 1 path.
    const v1Path = join(tmp.dir, 'as-v1.qcow2');
    const reader = await ManifestReader.open(fullPath);
    const tuples: Array<[number, number, string | null]> = [];
    for await (const e of reader.entries())
      if (e.type === 'zero') tuples.push([e.offset, e.length, null]);
      else
        e.digests.forEach((d, i) =>
          tuples.push([e.offset + i * e.chunk, Math.min(e.chunk, e.length - i * e.chunk), d]),
        );
    await reader.close();
    writeFileSync(
      manifestPath(v1Path),
      JSON.stringify({ ...fullManifest, version: 1, written: tuples }),
    );
    const readFullV1 = child(READ, [v1Path]);
    expect(readFullV1).toMatchObject({ version: 1, dataBytes: fullManifest.dataBytes });
    for (const r of [readFull, readInc, readFullV1])
      expect(r.maxRssKiB - baseline.maxRssKiB).toBeLessThan(32 * 1024);

    // A disk full of data: one extent per 512 KiB, where version 1 stopped scaling.
    const denseSize = DENSE_TIB * TiB;
    const dense = join(tmp.dir, 'dense.qcow2');
    const writeDense = child(WRITE_DENSE, [dense, String(denseSize)]);
    const readDense = child(READ, [dense]);
    expect(readDense).toMatchObject({ version: 2, dataExtents: denseSize / (512 * KiB) });
    // Bounded: what a read holds beyond a bare node does not grow with the disk.
    expect(readDense.maxRssKiB - baseline.maxRssKiB).toBeLessThan(64 * 1024);
    expect(writeDense.maxRssKiB - baseline.maxRssKiB).toBeLessThan(64 * 1024);
    // Version 1 for comparison, on at most 256 GiB of the same (its reader holds the whole file).
    const v1Size = Math.min(denseSize, V1_MAX);
    const denseV1 = join(tmp.dir, 'dense-v1.qcow2');
    writeDenseV1(denseV1, v1Size);
    const readDenseV1 = child(READ, [denseV1]);
    expect(readDenseV1).toMatchObject({ version: 1, dataExtents: v1Size / (512 * KiB) });

    const figures = {
      sparse: {
        diskBytes: SIZE,
        dataPlaces: { full: first.length, incremental: more.length + 2 },
        seconds: {
          full: full.seconds,
          incremental: inc.seconds,
          restoreToQcow2: restore.seconds,
          compareWithSource: compare.seconds,
          verifyChain: verify.seconds,
        },
        bytesTransferred: {
          full: fullDisk?.bytesTransferred,
          incremental: incDisk?.bytesTransferred,
        },
        manifestBytes: {
          full: statSync(manifestPath(fullPath)).size,
          incremental: statSync(manifestPath(incPath)).size,
          fullAsV1: statSync(manifestPath(v1Path)).size,
        },
        manifest: { full: totals(fullManifest), incremental: totals(incManifest) },
        readerMaxRssKiB: {
          nodeBaseline: baseline.maxRssKiB,
          full: readFull.maxRssKiB,
          incremental: readInc.maxRssKiB,
          fullAsV1: readFullV1.maxRssKiB,
        },
      },
      dense: {
        diskBytes: denseSize,
        extents: denseSize / (512 * KiB),
        v2: {
          manifestBytes: statSync(manifestPath(dense)).size,
          writeSeconds: round(writeDense.seconds),
          writerMaxRssKiB: writeDense.maxRssKiB,
          readSeconds: round(readDense.seconds),
          readerMaxRssKiB: readDense.maxRssKiB,
        },
        v1: {
          diskBytes: v1Size,
          manifestBytes: statSync(manifestPath(denseV1)).size,
          readSeconds: round(readDenseV1.seconds),
          readerMaxRssKiB: readDenseV1.maxRssKiB,
          note: 'one JSON string: past V8 string limit from about 4.4 TiB of data, never written',
        },
        nodeBaselineMaxRssKiB: baseline.maxRssKiB,
      },
    };
    const results = join(__dirname, '..', 'results');
    mkdirSync(results, { recursive: true });
    writeFileSync(join(results, 'manifest-16tib.json'), `${JSON.stringify(figures, null, 2)}\n`);
  }, 600_000);
});
