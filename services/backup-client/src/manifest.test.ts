import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { WrittenExtent } from './copy/copy-disk';
import { ManifestWriter } from './manifest';
import {
  MANIFEST_RUN_DIGESTS,
  ManifestEncoder,
  ManifestError,
  ManifestReader,
  manifestPath,
  partialPath,
  readManifest,
  type ManifestEntry,
} from './protocol';

const KiB = 1024;
const MiB = 1024 * KiB;
const TiB = 1024 * 1024 * MiB;
const CHUNK = 512 * KiB;

const digestOf = (n: number): string => n.toString(16).padStart(32, '0');

const header = {
  jobId: 'j1',
  jobType: 'backup' as const,
  diskKey: 'd0',
  changeId: 'u/2',
  baseChangeId: 'u/1',
  size: 16 * TiB,
  backingPath: '/r/full.qcow2',
  fullReason: null,
  digest: 'xxh128' as const,
};
const end = {
  canary: { sampledBytes: 4096, mismatchedBytes: 0 },
  createdAt: '2026-01-02T03:04:05Z',
};

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'tidemark-manifest-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A data area copied in `CHUNK` requests, as copyPlan reports it. */
function area(offset: number, length: number, first = 0): WrittenExtent[] {
  const out: WrittenExtent[] = [];
  for (let at = offset, i = first; at < offset + length; at += CHUNK, i++)
    out.push({ offset: at, length: Math.min(CHUNK, offset + length - at), digest: digestOf(i) });
  return out;
}

async function write(image: string, extents: WrittenExtent[]): Promise<void> {
  const w = await ManifestWriter.create(image, header);
  for (const e of extents) await w.add(e);
  await w.finish(end);
  await w.commit();
}

async function readBack(
  image: string,
): Promise<{ entries: ManifestEntry[]; reader: ManifestReader }> {
  const reader = await ManifestReader.open(image);
  const entries: ManifestEntry[] = [];
  try {
    for await (const e of reader.entries()) entries.push(e);
  } finally {
    await reader.close();
  }
  return { entries, reader };
}

/** The entries cut back into the extents they stand for. */
function extentsOf(entries: ManifestEntry[]): WrittenExtent[] {
  return entries.flatMap((e) =>
    e.type === 'zero'
      ? [{ offset: e.offset, length: e.length }]
      : e.digests.map((digest, i) => ({
          offset: e.offset + i * e.chunk,
          length: Math.min(e.chunk, e.length - i * e.chunk),
          digest,
        })),
  );
}

const lines = (image: string): Array<Record<string, unknown>> =>
  readFileSync(manifestPath(image), 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('the version 2 manifest', () => {
  it('given the extents of a copy, when written and read back, then every extent, the header and the end come back', async () => {
    const image = join(dir, 'd0.qcow2');
    const extents = [
      ...area(0, 5 * CHUNK + 100 * KiB),
      { offset: 3 * MiB, length: 1 * MiB },
      ...area(8 * MiB, 64 * KiB, 100),
      ...area(15 * TiB, 3 * CHUNK, 200),
      { offset: 16 * TiB - 4 * KiB, length: 4 * KiB },
    ];
    await write(image, extents);
    const { entries, reader } = await readBack(image);
    expect(extentsOf(entries)).toEqual(extents);
    expect(reader.header).toEqual({ format: 'tidemark-manifest', version: 2, ...header });
    expect(reader.manifest()).toEqual({
      format: 'tidemark-manifest',
      version: 2,
      ...header,
      ...end,
      dataExtents: 10,
      dataBytes: 5 * CHUNK + 100 * KiB + 64 * KiB + 3 * CHUNK,
      zeroRanges: 2,
      zeroBytes: 1 * MiB + 4 * KiB,
    });
    expect(await readManifest(image)).toEqual(reader.manifest());
    const first = lines(image)[0] as Record<string, unknown>;
    expect(Object.keys(first).slice(0, 2)).toEqual(['format', 'version']);
  });

  it('given equal extents laid end to end, then they share a line, up to MANIFEST_RUN_DIGESTS; adjacent zero ranges are one', async () => {
    const image = join(dir, 'runs.qcow2');
    const n = 2 * MANIFEST_RUN_DIGESTS + 100;
    await write(image, [
      ...area(0, n * CHUNK - 1000),
      { offset: n * CHUNK, length: 1 * MiB },
      { offset: n * CHUNK + 1 * MiB, length: 3 * MiB },
      ...area(n * CHUNK + 4 * MiB, 2 * CHUNK, 7),
    ]);
    const got = lines(image);
    expect(got.map((l) => l.type ?? 'header')).toEqual([
      'header',
      'data',
      'data',
      'data',
      'zero',
      'data',
      'end',
    ]);
    const runs = got.filter((l) => l.type === 'data') as Array<{ digests: string[] }>;
    expect(runs.map((r) => r.digests.length)).toEqual([
      MANIFEST_RUN_DIGESTS,
      MANIFEST_RUN_DIGESTS,
      100,
      2,
    ]);
    expect(got[3]).toMatchObject({ length: 100 * CHUNK - 1000, chunk: CHUNK });
    expect(got[4]).toEqual({ type: 'zero', offset: n * CHUNK, length: 4 * MiB });
    // A short extent ends its run; an extent after a gap starts a new one.
    const short = join(dir, 'short.qcow2');
    await write(short, [
      { offset: 0, length: CHUNK, digest: digestOf(1) },
      { offset: CHUNK, length: 1000, digest: digestOf(2) },
      { offset: CHUNK + 1000, length: CHUNK, digest: digestOf(3) },
      { offset: 4 * CHUNK, length: CHUNK, digest: digestOf(4) },
    ]);
    expect(lines(short).filter((l) => l.type === 'data')).toEqual([
      {
        type: 'data',
        offset: 0,
        length: CHUNK + 1000,
        chunk: CHUNK,
        digests: [digestOf(1), digestOf(2)],
      },
      { type: 'data', offset: CHUNK + 1000, length: CHUNK, chunk: CHUNK, digests: [digestOf(3)] },
      { type: 'data', offset: 4 * CHUNK, length: CHUNK, chunk: CHUNK, digests: [digestOf(4)] },
    ]);
  });

  it('given a copy still running, then only the partial manifest exists; an abort removes it', async () => {
    const image = join(dir, 'partial.qcow2');
    const w = await ManifestWriter.create(image, header);
    await w.add({ offset: 0, length: CHUNK, digest: digestOf(0) });
    await w.finish(end);
    expect(existsSync(partialPath(manifestPath(image)))).toBe(true);
    expect(existsSync(manifestPath(image))).toBe(false);
    await w.commit();
    expect(existsSync(partialPath(manifestPath(image)))).toBe(false);
    expect((await readManifest(image)).dataBytes).toBe(CHUNK);

    const other = join(dir, 'aborted.qcow2');
    const a = await ManifestWriter.create(other, header);
    await a.add({ offset: 0, length: CHUNK, digest: digestOf(0) });
    await a.abort();
    expect(existsSync(partialPath(manifestPath(other)))).toBe(false);
    expect(existsSync(manifestPath(other))).toBe(false);
  });

  it('given extents out of order, then the encoder refuses them', () => {
    const enc = new ManifestEncoder();
    enc.add({ offset: CHUNK, length: CHUNK, digest: digestOf(0) });
    expect(() => enc.add({ offset: 0, length: CHUNK, digest: digestOf(1) })).toThrow(
      /out of order/,
    );
    expect(() => enc.add({ offset: 4 * CHUNK, length: 0 })).toThrow(/out of order/);
  });
});

describe('reading a manifest that is not whole', () => {
  const image = (): string => join(dir, 'bad.qcow2');
  const good = async (): Promise<string[]> => {
    await write(image(), [
      ...area(0, 2 * CHUNK),
      { offset: 2 * CHUNK, length: CHUNK },
      ...area(4 * CHUNK, CHUNK, 5),
    ]);
    return readFileSync(manifestPath(image()), 'utf8').trimEnd().split('\n');
  };
  const withLines = (l: string[]): void =>
    writeFileSync(manifestPath(image()), l.map((x) => `${x}\n`).join(''));
  const readErr = (): Promise<unknown> => readManifest(image()).catch((e: unknown) => e);

  it.each([
    ['cut short', (l: string[]) => l.slice(0, -1), /cut short: it has no end line/],
    [
      'missing a line',
      (l: string[]) => [l[0], l[2], l[3], l[4]],
      /end line says dataExtents 3, its lines hold 1/,
    ],
    ['with a line after its end', (l: string[]) => [...l, l[1]], /line 6 follows its end line/],
    [
      'with lines out of order',
      (l: string[]) => [l[0], l[2], l[1], l[3], l[4]],
      /line 3 starts at 0, before/,
    ],
    [
      'with a torn line',
      (l: string[]) => [l[0], (l[1] as string).slice(0, 30)],
      /line 2 is not JSON/,
    ],
    [
      'with a run missing a digest',
      (l: string[]) => [l[0], (l[1] as string).replace(/,"[0-9a-f]{32}"\]/, ']'), ...l.slice(2)],
      /line 2 is malformed: digests: a run needs one digest per chunk/,
    ],
    [
      'of an unknown version',
      (l: string[]) => [(l[0] as string).replace('"version":2', '"version":3'), ...l.slice(1)],
      /is of version 3; this reads 1 and 2/,
    ],
  ])('given a manifest %s, then it does not read', async (_what, change, message) => {
    withLines(change(await good()) as string[]);
    const err = await readErr();
    expect(err).toBeInstanceOf(ManifestError);
    expect(String((err as Error).message)).toMatch(message);
  });

  it('given no manifest, then ManifestError names the path', async () => {
    await expect(readManifest(join(dir, 'none.qcow2'))).rejects.toThrow(
      `no manifest ${manifestPath(join(dir, 'none.qcow2'))}`,
    );
  });
});

describe('a version 1 manifest already on disk', () => {
  it('is still read: its entries as runs of one, its totals counted', async () => {
    const image = join(dir, 'old.qcow2');
    const written: Array<[number, number, string | null]> = [
      [0, CHUNK, digestOf(1)],
      [CHUNK, 4096, digestOf(2)],
      [1 * MiB, 1 * MiB, null],
    ];
    // As the client wrote it before large disks (JSON.stringify of one object, no newline).
    writeFileSync(
      manifestPath(image),
      JSON.stringify({
        format: 'tidemark-manifest',
        version: 1,
        jobId: 'j0',
        jobType: 'backup',
        diskKey: 'd0',
        changeId: 'u/1',
        baseChangeId: null,
        size: 8 * MiB,
        backingPath: null,
        canary: null,
        createdAt: '2025-05-05T00:00:00Z',
        digest: 'xxh128',
        written,
      }),
    );
    const { entries, reader } = await readBack(image);
    expect(entries).toEqual([
      { type: 'data', offset: 0, length: CHUNK, chunk: CHUNK, digests: [digestOf(1)] },
      { type: 'data', offset: CHUNK, length: 4096, chunk: 4096, digests: [digestOf(2)] },
      { type: 'zero', offset: 1 * MiB, length: 1 * MiB },
    ]);
    expect(reader.manifest()).toEqual({
      format: 'tidemark-manifest',
      version: 1,
      jobId: 'j0',
      jobType: 'backup',
      diskKey: 'd0',
      changeId: 'u/1',
      baseChangeId: null,
      size: 8 * MiB,
      backingPath: null,
      fullReason: null, // absent in manifests of before per-disk full copies
      canary: null,
      createdAt: '2025-05-05T00:00:00Z',
      digest: 'xxh128',
      dataExtents: 2,
      dataBytes: CHUNK + 4096,
      zeroRanges: 1,
      zeroBytes: 1 * MiB,
    });
  });

  it('that is malformed names the field', async () => {
    const image = join(dir, 'old-bad.qcow2');
    writeFileSync(
      manifestPath(image),
      JSON.stringify({ format: 'tidemark-manifest', version: 1, jobId: 'j0' }),
    );
    await expect(readManifest(image)).rejects.toThrow(/line 1 is malformed: jobType/);
    writeFileSync(manifestPath(image), '{"format":');
    await expect(readManifest(image)).rejects.toThrow(/is not JSON/);
  });
});
