import { StartDataV1, type JobType, type Logger, type StartData } from '@tidemark/shared';
import { z } from 'zod';
import { DEFAULT_CANARY, runCanary, type CanaryOptions } from './copy/canary';
import { copyPlan, planCopy, type CopyPlan } from './copy/copy-disk';
import { ClientError, FullBackupRequiredError } from './errors';
import { DIGEST_ALGORITHM } from './digest';
import { ManifestWriter } from './manifest';
import type { ProgressReporter } from './progress';
import type { DiskResult, ResultLine } from './protocol';
import { chainTag } from './source/change-id';
import { ownerTag } from './source/qemu-live';
import type { SourceDriver, SourceSnapshot } from './source/types';
import { checkTarget, Qcow2Target, type TargetSpec } from './target/qcow2-target';
import { checkFreeSpace, isNoSpace, noSpaceMessage, repositoryFull } from './target/space';
import { dirname } from 'node:path';

/** The job the client is started with: `backup.start`'s data plus the job type. */
export const ClientJobSpec = StartDataV1.extend({
  jobType: z.enum(['backup', 'replication']),
});
export type ClientJobSpec = z.output<typeof ClientJobSpec>;

export interface ClientJob extends StartData {
  jobId: string;
  jobType: JobType;
}

export interface RunDeps {
  drivers: SourceDriver[];
  log: Logger;
  progress: ProgressReporter;
  workDir: string;
  signal: AbortSignal;
  copy?: { chunkSize?: number; inFlight?: number; maxBytesPerSecond?: number };
  /** The CBT canary of each incremental disk (see copy/canary); DEFAULT_CANARY when absent. */
  canary?: CanaryOptions;
  /**
   * Called with the completed result before the old change tracking is removed; the client
   * commits only if it resolves true. The runner uses it to commit only after the result is
   * on the bus: if the runner dies first, the next attempt can still start from the old
   * change_id.
   */
  confirmCommit?: (result: ResultLine) => Promise<boolean>;
  /** Told each disk's point in time as soon as it is taken (the runner checks the job is open). */
  onPointInTime?: (diskKey: string, changeId: string) => void;
}

type Disk = StartData['disks'][number];

/**
 * Where a disk is written. `previous` null is a full copy of the disk: for a backup a new file
 * with no backing — a disk copied full inside an incremental job (`fullCopy`) drops the planned
 * backing file, since its new file holds every block.
 */
function targetFor(
  job: ClientJob,
  disk: Disk,
  previous: string | null,
  fullCopy = false,
): TargetSpec {
  if (job.jobType === 'replication')
    return previous === null
      ? { kind: 'new', path: disk.targetPath, backingPath: null, replace: true }
      : { kind: 'in-place', path: disk.targetPath, backingPath: null };
  if (previous === null) {
    if (disk.backingPath !== null && !fullCopy)
      throw new ClientError(
        'TARGET_INVALID',
        `disk ${disk.diskKey}: a backing path (${disk.backingPath}) needs a previous change_id`,
        false,
      );
    return { kind: 'new', path: disk.targetPath, backingPath: null };
  }
  if (disk.backingPath === null)
    throw new ClientError(
      'TARGET_INVALID',
      `disk ${disk.diskKey}: an incremental backup needs the parent's file as backing path`,
      false,
    );
  return { kind: 'overlay', path: disk.targetPath, backingPath: disk.backingPath };
}

/** Every area the change tracking called changed (data and zeroes), in offset order. */
function changedAreas(plan: CopyPlan): Array<{ offset: number; length: number }> {
  return [...plan.data, ...plan.zero].sort((a, b) => a.offset - b.offset);
}

function toClientError(err: unknown, diskKey: string): ClientError {
  if (err instanceof ClientError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ClientError('COPY_FAILED', `disk ${diskKey}: ${message}`, true, { cause: err });
}

interface DiskRun {
  snapshot?: SourceSnapshot;
  target?: Qcow2Target;
  manifest?: ManifestWriter;
  result?: DiskResult;
  error?: ClientError;
}

/**
 * Takes the disk's point in time for the job's chain. A disk of an incremental whose previous
 * change_id the source cannot honour (tracking gone or inconsistent, disk resized) fails the job
 * with FULL_BACKUP_REQUIRED, unless the job asks for such a disk to be copied in full: then it
 * is, alone, and `fullReason` says why.
 */
async function openDisk(
  job: ClientJob,
  disk: Disk,
  driver: SourceDriver,
  deps: RunDeps,
  run: DiskRun,
): Promise<{ spec: TargetSpec; snapshot: SourceSnapshot; fullReason: string | null }> {
  const log = deps.log.child({ diskKey: disk.diskKey });
  const chain = chainTag(job.jobType, job.repositoryId);
  const owner = ownerTag(job.jobId);
  const chainHeads = disk.chainHeads.map((h) => ({
    chain: chainTag(h.jobType, h.repositoryId),
    changeId: h.changeId,
  }));
  const incremental = job.backupType === 'incremental';
  const previous = !incremental || disk.previousChangeId === '*' ? null : disk.previousChangeId;
  const openFull = async (fullReason: string | null) => {
    const spec = targetFor(job, disk, null, fullReason !== null);
    await checkTarget(spec);
    deps.signal.throwIfAborted();
    run.snapshot = await driver.open(disk.source, null, deps.workDir, chain, chainHeads, owner);
    return { spec, snapshot: run.snapshot, fullReason };
  };
  if (previous === null)
    return openFull(
      incremental ? (disk.fullReason ?? 'no previous change_id for this disk') : null,
    );
  const spec = targetFor(job, disk, previous);
  const existingSize = await checkTarget(spec);
  const fallBack = async (why: string) => {
    if (job.ifChangeIdUnusable !== 'full')
      throw new FullBackupRequiredError(`disk ${disk.diskKey}: ${why}`, previous);
    log.warn({ previousChangeId: previous, why }, 'change_id unusable: copying this disk in full');
    await run.snapshot?.close();
    return openFull(why);
  };
  deps.signal.throwIfAborted();
  try {
    run.snapshot = await driver.open(disk.source, previous, deps.workDir, chain, chainHeads, owner);
  } catch (err) {
    if (!(err instanceof FullBackupRequiredError)) throw err;
    return fallBack(err.message);
  }
  if (existingSize !== null && existingSize !== run.snapshot.size)
    return fallBack(
      `the disk is ${run.snapshot.size} bytes, its previous backup ${existingSize}; a resized disk needs a full copy`,
    );
  return { spec, snapshot: run.snapshot, fullReason: null };
}

async function copyOneDisk(job: ClientJob, disk: Disk, deps: RunDeps, run: DiskRun): Promise<void> {
  const log = deps.log.child({ diskKey: disk.diskKey });
  const driver = deps.drivers.find((d) => d.accepts(disk.source));
  if (!driver)
    throw new ClientError(
      'SOURCE_UNAVAILABLE',
      `disk ${disk.diskKey}: no source driver handles "${disk.source}"`,
      false,
    );
  const { spec, snapshot, fullReason } = await openDisk(job, disk, driver, deps, run);
  log.info(
    { driver: driver.name, changeId: snapshot.changeId, base: snapshot.baseChangeId, fullReason },
    'source point in time taken',
  );
  deps.onPointInTime?.(disk.diskKey, snapshot.changeId);
  const reader = await snapshot.openReader();
  // The target is created and served while the changed areas are walked.
  const opening = Qcow2Target.open(spec, snapshot.size, deps.workDir).then((t) => {
    run.target = t;
    return t;
  });
  let plan: Awaited<ReturnType<typeof planCopy>>;
  try {
    plan = await planCopy(snapshot, reader);
  } catch (err) {
    await opening.catch(() => undefined); // so the caller can abort it
    throw err;
  }
  const target = await opening;
  const manifest = await ManifestWriter.create(disk.targetPath, {
    jobId: job.jobId,
    jobType: job.jobType,
    diskKey: disk.diskKey,
    changeId: snapshot.changeId,
    baseChangeId: snapshot.baseChangeId,
    size: snapshot.size,
    backingPath: spec.kind === 'overlay' ? spec.backingPath : null,
    fullReason,
    digest: DIGEST_ALGORITHM,
  });
  run.manifest = manifest;
  // Refused before a byte is copied when the repository cannot hold the copy; an update of a
  // replica needs its room twice, for the overlay and for committing it.
  await checkFreeSpace(
    target.dir,
    snapshot.size,
    plan.dataBytes * (spec.kind === 'in-place' ? 2 : 1),
    spec.path,
  );
  deps.progress.setTotal(disk.diskKey, plan.dataBytes);
  log.info(
    { dataBytes: plan.dataBytes, dataExtents: plan.data.length, zeroExtents: plan.zero.length },
    'copy planned',
  );
  const t0 = performance.now();
  await copyPlan(plan, reader, target.writer, target.needsZeroes, {
    ...deps.copy,
    signal: deps.signal,
    onProgress: (n) => deps.progress.setDone(disk.diskKey, n),
    onWritten: (extent) => manifest.add(extent),
  });
  deps.signal.throwIfAborted();
  // Only a disk that continued its chain has blocks its tracking calls unchanged to check.
  const canary =
    snapshot.baseChangeId !== null
      ? await runCanary(
          snapshot.size,
          changedAreas(plan),
          reader,
          target.writer,
          deps.canary ?? DEFAULT_CANARY,
        )
      : null;
  if (canary && canary.mismatchedBytes > 0)
    log.error(
      { ...canary, baseChangeId: snapshot.baseChangeId },
      'the change tracking missed writes: blocks it calls unchanged differ from the chain',
    );
  const t1 = performance.now();
  // The manifest is on disk (fsynced at its partial path) before the target moves into place;
  // the target's finish moves it beside the file at the moment its kind needs (see finish).
  await target.finish(async () => {
    await manifest.finish({ canary, createdAt: new Date().toISOString() });
    await manifest.commit();
  });
  log.info(
    { copySeconds: (t1 - t0) / 1000, flushSeconds: (performance.now() - t1) / 1000 },
    'target flushed',
  );
  run.result = {
    diskKey: disk.diskKey,
    changeId: snapshot.changeId,
    bytesTransferred: plan.dataBytes,
    targetPath: disk.targetPath,
    bytesTotal: snapshot.size,
    fullReason,
    canary,
  };
  log.info({ bytesTransferred: plan.dataBytes, changeId: snapshot.changeId }, 'disk copied');
}

/**
 * Copies every disk of a job in parallel. Disks that finish are reported even if another
 * fails. Only when every disk finished are the old change_ids forgotten on the sources; until
 * then both the old and the new change_id of a disk stay usable.
 */
export async function runJob(job: ClientJob, deps: RunDeps): Promise<ResultLine> {
  const runs = new Map<string, DiskRun>(job.disks.map((d) => [d.diskKey, {}]));
  for (const d of job.disks) deps.progress.addDisk(d.diskKey);
  deps.progress.start();
  deps.progress.setPhase('copying');
  await Promise.all(
    job.disks.map(async (disk) => {
      const run = runs.get(disk.diskKey) as DiskRun;
      try {
        await copyOneDisk(job, disk, deps, run);
      } catch (err) {
        run.error = deps.signal.aborted
          ? new ClientError('INTERRUPTED', 'the backup client was interrupted', true)
          : !(err instanceof ClientError) && isNoSpace(err)
            ? await repositoryFull(
                dirname(disk.targetPath),
                `writing ${disk.targetPath} failed: ${noSpaceMessage(err)}`,
                err,
              )
            : toClientError(err, disk.diskKey);
        if (!run.error.message.startsWith(`disk ${disk.diskKey}`))
          run.error.message = `disk ${disk.diskKey}: ${run.error.message}`;
        deps.log.error(
          { diskKey: disk.diskKey, code: run.error.code, err: run.error.message },
          'disk failed',
        );
        await run.target?.abort().catch(() => undefined);
        await run.manifest?.abort().catch(() => undefined);
      }
    }),
  );
  deps.progress.setPhase('finalizing');
  const all = [...runs.values()];
  const failed = all.filter((r) => r.error);
  const finished = all.flatMap((r) => (r.result ? [r.result] : []));
  // The last progress line goes out before any result line: the result is always last.
  deps.progress.stop();
  deps.progress.emit();
  const completed: ResultLine = {
    type: 'result',
    jobId: job.jobId,
    status: 'completed',
    disks: finished,
    bytesTransferred: finished.reduce((s, d) => s + d.bytesTransferred, 0),
  };
  const commit =
    failed.length === 0 && (deps.confirmCommit ? await deps.confirmCommit(completed) : true);
  if (failed.length === 0 && !commit)
    deps.log.warn(
      'result not confirmed: the old change tracking is kept (both change_ids stay usable)',
    );
  if (commit) {
    for (const r of all) {
      await r.snapshot
        ?.commit()
        .catch((err: unknown) =>
          deps.log.warn({ err: String(err) }, 'old change tracking not removed (harmless)'),
        );
    }
  }
  const closed = await Promise.allSettled(all.map((r) => r.snapshot?.close()));
  for (const c of closed)
    if (c.status === 'rejected')
      deps.log.warn({ err: String(c.reason) }, 'source point in time not fully released');
  if (failed.length === 0) return completed;
  const first = (failed.find((r) => r.error?.code !== 'INTERRUPTED') ?? failed[0]) as DiskRun;
  const error = first.error as ClientError;
  return {
    type: 'result',
    jobId: job.jobId,
    status: 'failed',
    code: error.code,
    message:
      failed.length > 1
        ? `${error.message} (and ${failed.length - 1} more disk(s) failed)`
        : error.message,
    retryable: error.retryable,
    finishedDisks: finished,
  };
}
