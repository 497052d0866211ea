/**
 * The contract between the appliance-runner and the backup client it starts: the environment
 * the runner hands over, the JSON lines the client prints on stdout (progress, a point in time
 * per disk, one result), the token the runner writes to the client's stdin, and the manifest
 * the client leaves beside each file it wrote. The client writes through this module and the
 * runner parses through it; nothing else spells them.
 */
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

/**
 * What one job wrote into one file of a chain: every data extent with its digest, and every
 * range written as zeroes. `verify` re-reads the chain against it; the runner reads it to find
 * an earlier attempt's finished copy.
 */
export const Manifest = z.object({
  format: z.literal('tidemark-manifest'),
  version: z.literal(1),
  jobId: z.string(),
  jobType: z.enum(['backup', 'replication']),
  diskKey: z.string(),
  /** The change_id this file's copy ends at. */
  changeId: z.string(),
  /** The change_id it started from; null for a full copy. */
  baseChangeId: z.string().nullable(),
  /** Size of the disk in bytes. */
  size: z.number().int().min(0),
  backingPath: z.string().nullable(),
  /**
   * Why this disk of an incremental was copied in full; null when it continued its chain.
   * Absent in manifests of before per-disk full copies.
   */
  fullReason: z.string().nullable().default(null),
  /** The CBT canary's figures for a disk that continued its chain; null when not run (or older). */
  canary: Canary.nullable().default(null),
  createdAt: z.string(),
  /** How `written` digests were made. */
  digest: z.literal('xxh128'),
  /** `[offset, length, hex digest | null]`; null = zeroes. */
  written: z.array(z.tuple([z.number().int(), z.number().int(), z.string().nullable()])),
});
export type Manifest = z.output<typeof Manifest>;
