/**
 * The contract between the appliance-runner and the backup client it starts: the environment
 * the runner hands over, the JSON lines the client prints on stdout (progress, a point in time
 * per disk, one result), the token the runner writes to the client's stdin, and the manifest
 * the client leaves beside each file it wrote. The client writes through this module and the
 * runner parses through it; nothing else spells them.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ProgressPhase } from '@tidemark/shared';
import { z } from 'zod';

/** The environment variables the client reads; the runner sets the first four for each job. */
export const ClientEnv = {
  /** The job the copy belongs to; `backup` refuses to start without it. */
  JobId: 'TIDEMARK_JOB_ID',
  /** Each disk's previous change_id: JSON `{"<disk key>": "<change_id>"}`, or one change_id. */
  PreviousChangeId: 'TIDEMARK_PREVIOUS_CHANGE_ID',
  /** Where sockets and fleece overlays go (the client moves to a shorter one if sockets would not fit). */
  WorkDir: 'TIDEMARK_WORK_DIR',
  /** `1`: stop when stdin closes, and wait for `COMMIT_LINE` after a completed result. */
  ExitWithParent: 'TIDEMARK_EXIT_WITH_PARENT',
  /** Copy request size in KiB. */
  CopyChunkKib: 'TIDEMARK_COPY_CHUNK_KIB',
  /** Copy requests in flight per disk. */
  CopyInFlight: 'TIDEMARK_COPY_IN_FLIGHT',
  /** Read-rate limit per disk, MB/s. */
  CopyMaxMbps: 'TIDEMARK_COPY_MAX_MBPS',
  /** Blocks the CBT canary samples per incremental disk; 0 turns it off. */
  CanaryBlocks: 'TIDEMARK_CANARY_BLOCKS',
  /** Size of a canary block in KiB. */
  CanaryBlockKib: 'TIDEMARK_CANARY_BLOCK_KIB',
  /** Seed of the canary's sample (random when unset). */
  CanarySeed: 'TIDEMARK_CANARY_SEED',
  /** Progress line interval; tests shorten it. */
  ProgressIntervalMs: 'TIDEMARK_PROGRESS_INTERVAL_MS',
} as const;

/** The copy and canary tuning an operator sets on the runner; the runner passes it through. */
export const tuningEnv = [
  ClientEnv.CopyChunkKib,
  ClientEnv.CopyInFlight,
  ClientEnv.CopyMaxMbps,
  ClientEnv.CanaryBlocks,
  ClientEnv.CanaryBlockKib,
  ClientEnv.CanarySeed,
] as const;

/**
 * What the runner writes to the client's stdin once the completed result is on the bus: only
 * then may the client forget the old change tracking.
 */
export const COMMIT_LINE = 'commit\n';

const Bytes = z.number().int().min(0);

/** What the CBT canary sampled of blocks its change tracking called unchanged, and found changed. */
const Canary = z.object({ sampledBytes: Bytes, mismatchedBytes: Bytes });

/** One disk the client copied and flushed. */
export const DiskResult = z.object({
  diskKey: z.string(),
  /** The change_id of this backup point: where the disk's next incremental starts. */
  changeId: z.string(),
  /** Bytes of data copied for the disk. */
  bytesTransferred: Bytes,
  /** The file the disk was written to. */
  targetPath: z.string(),
  /** Size of the disk in bytes. */
  bytesTotal: Bytes,
  /** Why this disk of an incremental was copied in full; null when it continued its chain. */
  fullReason: z.string().min(1).max(1024).nullable().default(null),
  /** The CBT canary of a disk that continued its chain; null for a full copy. */
  canary: Canary.nullable().default(null),
});
export type DiskResult = z.output<typeof DiskResult>;

/** Written at most every interval and at each phase change; the result line is always last. */
export const ProgressLine = z.object({
  type: z.literal('progress'),
  /** The client's job id; the runner knows it already and does not need it. */
  jobId: z.string().optional(),
  phase: z.enum(ProgressPhase),
  /** Monotonic from 0 within a run; the runner keeps a sequence of its own across attempts. */
  sequence: z.number().int().min(0).optional(),
  disks: z.array(z.object({ diskKey: z.string(), bytesDone: Bytes, bytesTotal: Bytes })),
  /** Bytes of data copied per second over the last interval. */
  bytesPerSecond: Bytes,
});
export type ProgressLine = z.input<typeof ProgressLine>;

/**
 * Printed once per disk, as soon as its point in time is taken (before a byte is copied). The
 * runner then asks the ledger whether the job is still open: a job that ended before this line
 * (failed by the ledger's reaper while its start was delivered again, say) must not gain a
 * backup point of a later time, so the runner stops the copy and discards it.
 */
export const PointInTimeLine = z.object({
  type: z.literal('point-in-time'),
  diskKey: z.string(),
  /** The change_id the copy will end at. */
  changeId: z.string(),
});
export type PointInTimeLine = z.input<typeof PointInTimeLine>;

const CompletedResult = z.object({
  type: z.literal('result'),
  /** The client's job id; absent only on a failure before the job was read. */
  jobId: z.string().optional(),
  status: z.literal('completed'),
  disks: z.array(DiskResult),
  /** Total bytes of data copied. */
  bytesTransferred: Bytes,
});

const FailedResult = z.object({
  type: z.literal('result'),
  jobId: z.string().optional(),
  status: z.literal('failed'),
  /**
   * A failure code of the table in `@tidemark/shared` (`FailureCode`); a string here, since a
   * client of another version may know codes this runner does not.
   */
  code: z.string(),
  message: z.string(),
  /** Whether running the same job again may succeed. */
  retryable: z.boolean(),
  /** Disks copied and flushed before the failure, with their change_ids. */
  finishedDisks: z.array(DiskResult).default([]),
});

/** The one result line of a `backup` run: every disk finished, or why not. */
export const ResultLine = z.union([CompletedResult, FailedResult]);
export type ResultLine = z.input<typeof ResultLine>;

/** Any line of the client's stdout protocol. */
export const ClientLine = z.union([ProgressLine, PointInTimeLine, CompletedResult, FailedResult]);
export type ClientLine = z.input<typeof ClientLine>;
/** A line as the runner reads it (defaults filled in). */
export type ParsedLine = z.output<typeof ClientLine>;

/** One stdout line of the protocol. */
export function formatLine(line: ClientLine): string {
  return `${JSON.stringify(line)}\n`;
}

/** A stdout line of the client, or null when it is not the protocol (it is then only logged). */
export function parseLine(text: string): ParsedLine | null {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return null;
  }
  const parsed = ClientLine.safeParse(json);
  return parsed.success ? parsed.data : null;
}

/** What the client leaves beside each file it wrote (see `Manifest`). */
const MANIFEST_SUFFIX = '.tidemark.json';

/** Where the manifest of `image` is. */
export function manifestPath(image: string): string {
  return `${image}${MANIFEST_SUFFIX}`;
}

/**
 * Where a new file is written until it is flushed and renamed into place; the runner removes
 * one an earlier attempt left.
 */
export function partialPath(file: string): string {
  return `${file}.partial`;
}

// The manifest: what one job wrote into one file of a chain — every data extent with its
// digest, and every range written as zeroes. `verify` re-reads the chain against it; the runner
// reads it to find an earlier attempt's finished copy.
//
// Version 2 (written since large disks) is JSON lines, so neither writing nor reading it ever
// holds more than a line, whatever the disk's size:
//
//   {"format":"tidemark-manifest","version":2,"jobId":…,"size":…,"digest":"xxh128",…}   header
//   {"type":"data","offset":0,"length":1310720,"chunk":524288,"digests":["…","…","…"]}
//   {"type":"zero","offset":1310720,"length":4194304}
//   {"type":"end","canary":null,"createdAt":…,"dataExtents":3,"dataBytes":1310720,…}
//
// A data line is a run of extents laid end to end: `length` bytes from `offset` cut into
// `chunk`-byte extents (the last may be shorter), one digest each, at most
// `MANIFEST_RUN_DIGESTS` to a line (a line stays under 40 KiB). A zero line is one range
// written as (or found to read as) zeroes; adjacent ones are merged. Lines are in offset order
// and do not overlap. The end line carries what is known only once the copy is done, and the
// totals of the lines above it: a file cut short, or with a line lost, does not read.
//
// Version 1 (one JSON object with `written: [offset, length, digest | null][]`, one entry per
// copy request) reached V8's string limit on multi-TiB disks; it is still read, never written.

/** The fields every version has: the job, and the file it wrote. */
const ManifestJob = {
  jobId: z.string(),
  jobType: z.enum(['backup', 'replication']),
  diskKey: z.string(),
  /** The change_id this file's copy ends at. */
  changeId: z.string(),
  /** The change_id it started from; null for a full copy. */
  baseChangeId: z.string().nullable(),
  /** Size of the disk in bytes. */
  size: Bytes,
  backingPath: z.string().nullable(),
  /** How the digests were made. */
  digest: z.literal('xxh128'),
};

/** A manifest of before large disks: read, never written. */
export const ManifestV1 = z.object({
  format: z.literal('tidemark-manifest'),
  version: z.literal(1),
  ...ManifestJob,
  /**
   * Why this disk of an incremental was copied in full; null when it continued its chain.
   * Absent in manifests of before per-disk full copies.
   */
  fullReason: z.string().nullable().default(null),
  /** The CBT canary's figures for a disk that continued its chain; null when not run (or older). */
  canary: Canary.nullable().default(null),
  createdAt: z.string(),
  /** `[offset, length, hex digest | null]`; null = zeroes. */
  written: z.array(z.tuple([z.number().int(), z.number().int(), z.string().nullable()])),
});

/** The first line of a version 2 manifest. */
export const ManifestHeader = z.object({
  format: z.literal('tidemark-manifest'),
  version: z.literal(2),
  ...ManifestJob,
  /** Why this disk of an incremental was copied in full; null when it continued its chain. */
  fullReason: z.string().nullable(),
});
export type ManifestHeader = z.output<typeof ManifestHeader>;

/** Most digests on one data line. */
export const MANIFEST_RUN_DIGESTS = 1024;

const Length = z.number().int().min(1);
const DataRun = z
  .object({
    type: z.literal('data'),
    offset: Bytes,
    length: Length,
    chunk: Length,
    digests: z
      .array(z.string().regex(/^[0-9a-f]{32}$/))
      .min(1)
      .max(MANIFEST_RUN_DIGESTS),
  })
  .refine((r) => r.digests.length === Math.ceil(r.length / r.chunk), {
    message: 'a run needs one digest per chunk',
    path: ['digests'],
  });
const ZeroRange = z.object({ type: z.literal('zero'), offset: Bytes, length: Length });

/** The last line of a version 2 manifest. */
export const ManifestEnd = z.object({
  type: z.literal('end'),
  /** The CBT canary's figures for a disk that continued its chain; null when not run. */
  canary: Canary.nullable(),
  createdAt: z.string(),
  /** Data extents (digests) on the lines above, and their bytes. */
  dataExtents: Bytes,
  dataBytes: Bytes,
  /** Zero lines above, and their bytes. */
  zeroRanges: Bytes,
  zeroBytes: Bytes,
});

const ManifestBodyLine = z.discriminatedUnion('type', [DataRun, ZeroRange, ManifestEnd]);

/** A data run (a v1 data entry is a run of one) or a zero range, as a reader hands it out. */
export type ManifestEntry =
  | { type: 'data'; offset: number; length: number; chunk: number; digests: string[] }
  | { type: 'zero'; offset: number; length: number };

/** What a manifest says before its entries: the job and the file (either version). */
export type ManifestInfo = Omit<ManifestHeader, 'version'> & { version: 1 | 2 };

/** All a manifest says except its entries, read in full (either version). */
export interface Manifest extends ManifestInfo {
  canary: z.output<typeof Canary> | null;
  createdAt: string;
  dataExtents: number;
  dataBytes: number;
  zeroRanges: number;
  zeroBytes: number;
}

type Totals = Pick<Manifest, 'dataExtents' | 'dataBytes' | 'zeroRanges' | 'zeroBytes'>;
const noTotals = (): Totals => ({ dataExtents: 0, dataBytes: 0, zeroRanges: 0, zeroBytes: 0 });

const jsonLine = (value: unknown): string => `${JSON.stringify(value)}\n`;

/**
 * Turns the extents of a copy, given in offset order, into the lines of a version 2 manifest:
 * equal consecutive data extents become one run, adjacent zero ranges one range. It holds one
 * line at most; the caller writes out what each call returns.
 */
export class ManifestEncoder {
  private run: ManifestEntry | null = null;
  private end = 0;
  private readonly totals = noTotals();

  /** The header line. */
  static header(header: z.input<typeof ManifestHeader>): string {
    return jsonLine(ManifestHeader.parse(header));
  }

  /** Adds the next extent (`digest` absent or null: zeroes); returns the lines it completed. */
  add(extent: { offset: number; length: number; digest?: string | null }): string {
    const { offset, length } = extent;
    if (offset < this.end || !(length > 0))
      throw new Error(`manifest extent ${offset}+${length} is out of order (at ${this.end})`);
    this.end = offset + length;
    const run = this.run;
    const adjacent = run !== null && run.offset + run.length === offset;
    if (extent.digest == null) {
      this.totals.zeroBytes += length;
      if (adjacent && run.type === 'zero') {
        run.length += length;
        return '';
      }
      this.totals.zeroRanges++;
      return this.replace({ type: 'zero', offset, length });
    }
    this.totals.dataExtents++;
    this.totals.dataBytes += length;
    if (
      adjacent &&
      run.type === 'data' &&
      run.length === run.chunk * run.digests.length && // no short extent ended it
      length <= run.chunk &&
      run.digests.length < MANIFEST_RUN_DIGESTS
    ) {
      run.digests.push(extent.digest);
      run.length += length;
      return '';
    }
    return this.replace({ type: 'data', offset, length, chunk: length, digests: [extent.digest] });
  }

  /** The lines still held and the end line. */
  finish(end: { canary: z.input<typeof Canary> | null; createdAt: string }): string {
    return (
      this.replace(null) + jsonLine(ManifestEnd.parse({ type: 'end', ...end, ...this.totals }))
    );
  }

  private replace(next: ManifestEntry | null): string {
    const done = this.run;
    this.run = next;
    return done ? jsonLine(done) : '';
  }
}

/** A manifest that is missing, malformed, cut short, or of a version this reader does not know. */
export class ManifestError extends Error {
  override readonly name = 'ManifestError';
}

/** Longest line after the first (a full data line is under 40 KiB). */
const MAX_LINE = 1024 * 1024;

/**
 * The lines of an open file, read 64 KiB at a time as they are consumed. The first line is not
 * bounded: in version 1 it is the whole file.
 */
async function* fileLines(fh: FileHandle, path: string): AsyncGenerator<string> {
  const buffer = Buffer.allocUnsafe(64 * 1024);
  let parts: Buffer[] = [];
  let held = 0;
  let count = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buffer, 0, buffer.length, null);
    if (bytesRead === 0) break;
    const got = buffer.subarray(0, bytesRead);
    let start = 0;
    for (let nl = got.indexOf(10); nl !== -1; nl = got.indexOf(10, start)) {
      const piece = got.subarray(start, nl);
      const text = (held === 0 ? piece : Buffer.concat([...parts, piece])).toString('utf8');
      parts = [];
      held = 0;
      start = nl + 1;
      count++;
      yield text;
    }
    if (start < got.length) {
      parts.push(Buffer.from(got.subarray(start)));
      held += got.length - start;
      if (count > 0 && held > MAX_LINE)
        throw new ManifestError(`manifest ${path} line ${count + 1} is longer than ${MAX_LINE}`);
    }
  }
  if (held > 0) yield Buffer.concat(parts).toString('utf8');
}

function parseAs<T extends z.ZodType>(
  schema: T,
  text: string,
  path: string,
  line: number,
): z.output<T> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ManifestError(`manifest ${path} line ${line} is not JSON`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ManifestError(
      `manifest ${path} line ${line} is malformed: ${issue?.path.join('.')}: ${issue?.message}`,
    );
  }
  return parsed.data;
}

/**
 * Reads the manifest of one file as a stream: the header at `open`, then each entry as
 * `entries()` is iterated, checked as it comes (a version 2 file is checked to its end line);
 * memory stays that of one line. `manifest()` is what it said, once the entries were read.
 */
export class ManifestReader {
  private result: Manifest | null = null;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private readonly lines: AsyncGenerator<string>,
    readonly header: ManifestInfo,
    private readonly v1: z.output<typeof ManifestV1> | null,
  ) {}

  /** Opens the manifest beside `image`; throws ManifestError when there is none or its header is bad. */
  static async open(image: string): Promise<ManifestReader> {
    const path = manifestPath(image);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch {
      throw new ManifestError(`no manifest ${path}`);
    }
    try {
      const lines = fileLines(fh, path);
      const first = await lines.next();
      if (first.done) throw new ManifestError(`manifest ${path} is empty`);
      let version: unknown;
      try {
        version = (JSON.parse(first.value) as { version?: unknown } | null)?.version;
      } catch {
        throw new ManifestError(`manifest ${path} is not JSON`);
      }
      if (version === 1) {
        const v1 = parseAs(ManifestV1, first.value, path, 1);
        const header: ManifestInfo = {
          format: v1.format,
          version: 1,
          jobId: v1.jobId,
          jobType: v1.jobType,
          diskKey: v1.diskKey,
          changeId: v1.changeId,
          baseChangeId: v1.baseChangeId,
          size: v1.size,
          backingPath: v1.backingPath,
          digest: v1.digest,
          fullReason: v1.fullReason,
        };
        return new ManifestReader(path, fh, lines, header, v1);
      }
      if (typeof version === 'number' && version !== 2)
        throw new ManifestError(`manifest ${path} is of version ${version}; this reads 1 and 2`);
      return new ManifestReader(
        path,
        fh,
        lines,
        parseAs(ManifestHeader, first.value, path, 1),
        null,
      );
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Every entry in file order; throws ManifestError at the first bad line. Iterate it once. */
  async *entries(): AsyncGenerator<ManifestEntry> {
    const totals = noTotals();
    if (this.v1) {
      for (const [offset, length, digest] of this.v1.written) {
        if (digest === null) {
          totals.zeroRanges++;
          totals.zeroBytes += length;
          yield { type: 'zero', offset, length };
        } else {
          totals.dataExtents++;
          totals.dataBytes += length;
          yield { type: 'data', offset, length, chunk: length, digests: [digest] };
        }
      }
      if (!(await this.lines.next()).done)
        throw new ManifestError(`manifest ${this.path} (version 1) has more than one line`);
      this.result = {
        ...this.header,
        canary: this.v1.canary,
        createdAt: this.v1.createdAt,
        ...totals,
      };
      return;
    }
    let line = 1;
    let at = 0;
    let end: z.output<typeof ManifestEnd> | null = null;
    for await (const text of this.lines) {
      line++;
      if (end) throw new ManifestError(`manifest ${this.path} line ${line} follows its end line`);
      const entry = parseAs(ManifestBodyLine, text, this.path, line);
      if (entry.type === 'end') {
        end = entry;
        continue;
      }
      if (entry.offset < at)
        throw new ManifestError(
          `manifest ${this.path} line ${line} starts at ${entry.offset}, before the end of the line above (${at})`,
        );
      at = entry.offset + entry.length;
      if (at > this.header.size)
        throw new ManifestError(
          `manifest ${this.path} line ${line} ends at ${at}, past the disk's ${this.header.size} bytes`,
        );
      if (entry.type === 'data') {
        totals.dataExtents += entry.digests.length;
        totals.dataBytes += entry.length;
      } else {
        totals.zeroRanges++;
        totals.zeroBytes += entry.length;
      }
      yield entry;
    }
    if (!end) throw new ManifestError(`manifest ${this.path} is cut short: it has no end line`);
    for (const key of Object.keys(totals) as Array<keyof Totals>)
      if (end[key] !== totals[key])
        throw new ManifestError(
          `manifest ${this.path}: its end line says ${key} ${end[key]}, its lines hold ${totals[key]}`,
        );
    this.result = { ...this.header, canary: end.canary, createdAt: end.createdAt, ...totals };
  }

  /** What the manifest said; only once `entries()` has been read to its end. */
  manifest(): Manifest {
    if (!this.result) throw new Error(`manifest ${this.path}: entries not read to the end`);
    return this.result;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Reads and checks the whole manifest beside `image` (one line in memory at a time). */
export async function readManifest(image: string): Promise<Manifest> {
  const reader = await ManifestReader.open(image);
  try {
    const entries = reader.entries();
    while (!(await entries.next()).done);
    return reader.manifest();
  } finally {
    await reader.close();
  }
}
