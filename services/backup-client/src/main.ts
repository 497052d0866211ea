#!/usr/bin/env node
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, createLogger, forJob, type Logger } from '@tidemark/shared';
import { loadConfig, type ClientConfig, type PreviousChangeIds } from './config';
import { ClientError, type ClientErrorCode } from './errors';
import { ClientJobSpec, runJob, type ClientJob } from './job';
import { ProgressReporter } from './progress';
import { ClientEnv, COMMIT_LINE, formatLine, type ClientLine, type ResultLine } from './protocol';
import { stopAllServers } from './qemu/process';
import { restoreChain } from './restore';
import { QemuImageDriver } from './source/qemu-image';
import { ownerTag, QemuLiveDriver, removeLeftoversAt } from './source/qemu-live';
import { verifyChain } from './verify';

const USAGE = `usage:
  tidemark-backup-client backup --job <file | ->
      env: ${ClientEnv.JobId} (required), ${ClientEnv.PreviousChangeId} (JSON {"<disk key>": "<change_id>"},
           or one change_id for a one-disk job)
  tidemark-backup-client cleanup --job <file | ->
      env: ${ClientEnv.JobId}; removes what a backup run of that job left when it died
  tidemark-backup-client restore --from <chain top .qcow2> --to <new file> [--format raw|qcow2]
  tidemark-backup-client verify <chain top .qcow2>
stdout: JSON lines (progress and a point in time per disk, then one result); stderr: JSON log lines.
exit: 0 done, 1 failed, 2 usage or configuration error, 130 interrupted.`;

/** A usage or configuration error: exit 2 before anything is touched. */
class UsageError extends Error {}

/** A line of the runner's protocol. */
const send = (line: ClientLine): void => void process.stdout.write(formatLine(line));
/** restore's and verify's own JSON lines. */
const out = (line: object): void => void process.stdout.write(`${JSON.stringify(line)}\n`);

function readJobSpec(file: string): ClientJobSpec {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new UsageError(`--job ${file}: cannot be read (${(err as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError(`--job ${file}: not JSON`);
  }
  const parsed = ClientJobSpec.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new UsageError(`--job ${file}: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  return parsed.data;
}

/** Applies the previous change_ids of the environment to the job's disks; they must agree. */
function applyPreviousChangeIds(spec: ClientJobSpec, ids: PreviousChangeIds | undefined): void {
  if (ids === undefined) return;
  const name = ClientEnv.PreviousChangeId;
  let byDisk: Record<string, string | null>;
  if ('byDisk' in ids) byDisk = ids.byDisk;
  else if (spec.disks.length !== 1)
    throw new UsageError(
      `${name}: a job with several disks needs a JSON object {"<disk key>": "<change_id>"}`,
    );
  else byDisk = { [(spec.disks[0] as { diskKey: string }).diskKey]: ids.one };
  const keys = new Set(spec.disks.map((d) => d.diskKey));
  for (const key of Object.keys(byDisk))
    if (!keys.has(key)) throw new UsageError(`${name}: disk "${key}" is not a disk of the job`);
  for (const disk of spec.disks) {
    if (!(disk.diskKey in byDisk)) continue;
    const fromEnv = byDisk[disk.diskKey] ?? null;
    if (disk.previousChangeId !== null && disk.previousChangeId !== fromEnv)
      throw new UsageError(
        `${name}: disk "${disk.diskKey}" is ${JSON.stringify(fromEnv)} but the job says ${JSON.stringify(disk.previousChangeId)}`,
      );
    disk.previousChangeId = fromEnv;
  }
}

async function backup(args: string[], log: Logger, config: ClientConfig): Promise<number> {
  const { values } = parseArgs({ args, options: { job: { type: 'string' } }, strict: true });
  // The job id comes first: without it nothing is read, opened or copied.
  if (config.jobId === undefined)
    throw new UsageError(
      `${ClientEnv.JobId} is not set: the client refuses to copy a disk whose change_id it could not report`,
    );
  if (!values.job) throw new UsageError('--job <file | -> is required');
  const spec = readJobSpec(values.job);
  applyPreviousChangeIds(spec, config.previousChangeIds);
  const job: ClientJob = { ...spec, jobId: config.jobId };
  const jobLog = forJob(log, job.jobId, { jobType: job.jobType });

  // Named by the job's owner tag: the cleanup of a client that died finds it.
  const workDir = mkdtempSync(join(config.workBase, `tidemark-client-${ownerTag(job.jobId)}-`));
  const abort = new AbortController();
  let interrupts = 0;
  let resultPrinted = false;
  let stdinClosed = false;
  let committed = false;
  let confirm: ((yes: boolean) => void) | undefined;
  const onSignal = (signal: NodeJS.Signals | 'parent-gone'): void => {
    interrupts++;
    jobLog.warn({ signal }, 'interrupted: stopping the copy and cleaning up');
    abort.abort(new ClientError('INTERRUPTED', `interrupted (${signal})`, true));
    // The NBD servers are stopped so requests in flight end now, not when they complete.
    void stopAllServers();
    confirm?.(false); // a result not yet confirmed stays unconfirmed: keep the old bitmap
    if (interrupts > 1) process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Under a runner: stdin is a pipe from it. It writes COMMIT_LINE once our result is on the bus;
  // when the pipe closes the runner is gone (even SIGKILLed) and the job will be redone
  // elsewhere, so a copy still running stops and cleans up.
  const { underRunner } = config;
  if (underRunner) {
    let buffered = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.includes(COMMIT_LINE)) {
        committed = true;
        confirm?.(true);
      }
    });
    const parentGone = (): void => {
      if (stdinClosed) return;
      stdinClosed = true;
      if (confirm) confirm(false);
      else if (!resultPrinted) onSignal('parent-gone');
    };
    process.stdin.once('close', parentGone);
    // Our stdout is the runner's pipe too: writing to a dead runner fails with EPIPE, which
    // must mean "parent gone", not a crash that leaves qemu-nbd behind.
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      jobLog.warn({ err: err.code ?? String(err) }, 'stdout closed: the runner is gone');
      parentGone();
    });
    // And so is our stderr, where the log goes: a log line written after the runner died must
    // not crash the client before it has cleaned up (a running disk's export, block job and
    // fleece overlay would stay in its daemon, and hold the chain's bitmap). Nothing is logged
    // here: that would only fail again.
    process.stderr.on('error', parentGone);
  }
  const progress = new ProgressReporter(job.jobId, send, config.progressIntervalMs);
  let result: ResultLine;
  try {
    jobLog.info(
      { backupType: job.backupType, disks: job.disks.map((d) => d.diskKey) },
      'job started',
    );
    result = await runJob(job, {
      drivers: [new QemuLiveDriver(), new QemuImageDriver()],
      log: jobLog,
      progress,
      workDir,
      signal: abort.signal,
      copy: config.copy,
      canary: config.canary,
      onPointInTime: (diskKey, changeId) => send({ type: 'point-in-time', diskKey, changeId }),
      confirmCommit: underRunner
        ? async (completed) => {
            send(completed);
            resultPrinted = true;
            if (committed) return true;
            if (stdinClosed || abort.signal.aborted) return false;
            return new Promise<boolean>((resolve) => (confirm = resolve));
          }
        : undefined,
    });
  } finally {
    await stopAllServers();
    rmSync(workDir, { recursive: true, force: true });
  }
  if (abort.signal.aborted && result.status === 'failed') {
    result = {
      ...result,
      code: 'INTERRUPTED' satisfies ClientErrorCode,
      message: 'interrupted; nothing half-written kept',
      retryable: true,
    };
  }
  if (!resultPrinted) send(result);
  jobLog.info({ status: result.status }, 'job ended');
  process.stdin.destroy();
  if (result.status === 'completed') return 0;
  return abort.signal.aborted ? 130 : 1;
}

/**
 * After a `backup` run of the job that died without its teardown (SIGKILL, a crash): removes
 * what it left — exports, backup jobs and fleece nodes in the daemons of its running disks
 * (named by the job, see `ownerTag`) and its work directories. Never touches another job's.
 * Prints one JSON line of what it removed.
 */
async function cleanup(args: string[], log: Logger, config: ClientConfig): Promise<number> {
  const { values } = parseArgs({ args, options: { job: { type: 'string' } }, strict: true });
  if (config.jobId === undefined) throw new UsageError(`${ClientEnv.JobId} is not set`);
  if (!values.job) throw new UsageError('--job <file | -> is required');
  const spec = readJobSpec(values.job);
  const owner = ownerTag(config.jobId);
  const jobLog = forJob(log, config.jobId, { jobType: spec.jobType });
  const removed: string[] = [];
  const failed: string[] = [];
  const live = new QemuLiveDriver();
  for (const disk of spec.disks) {
    if (!live.accepts(disk.source)) continue;
    try {
      removed.push(...(await removeLeftoversAt(disk.source, owner)));
    } catch (err) {
      failed.push(`${disk.diskKey}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  for (const entry of readdirSync(config.workBase))
    if (entry.startsWith(`tidemark-client-${owner}-`)) {
      rmSync(join(config.workBase, entry), { recursive: true, force: true });
      removed.push(`work directory ${entry}`);
    }
  out({ type: 'cleanup', removed, failed });
  if (removed.length > 0) jobLog.warn({ removed }, "removed what the job's client left");
  if (failed.length > 0) jobLog.error({ err: failed }, 'could not clean up every disk');
  return failed.length > 0 ? 1 : 0;
}

async function restore(args: string[], log: Logger, config: ClientConfig): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      format: { type: 'string', default: 'raw' },
    },
    strict: true,
  });
  if (!values.from) throw new UsageError('--from <chain top .qcow2> is required');
  if (!values.to) throw new UsageError('--to <new file> is required');
  if (values.format !== 'raw' && values.format !== 'qcow2')
    throw new UsageError(`--format: must be raw or qcow2, not "${values.format}"`);
  const workDir = mkdtempSync(join(config.workBase, 'tidemark-restore-'));
  try {
    const r = await restoreChain(values.from, values.to, values.format, { workDir, log, out });
    out({ type: 'result', status: 'completed', ...r });
    return 0;
  } finally {
    await stopAllServers();
    rmSync(workDir, { recursive: true, force: true });
  }
}

async function verify(args: string[], log: Logger, config: ClientConfig): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, strict: true });
  const image = positionals[0];
  if (!image || positionals.length > 1) throw new UsageError('verify takes one image path');
  const workDir = mkdtempSync(join(config.workBase, 'tidemark-verify-'));
  try {
    const r = await verifyChain(image, { workDir, log, out });
    out({ type: 'result', ...r });
    return r.status === 'ok' ? 0 : 1;
  } finally {
    await stopAllServers();
    rmSync(workDir, { recursive: true, force: true });
  }
}

export async function main(argv: string[]): Promise<number> {
  let config: ClientConfig;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // Before anything is read or touched, and before a logger exists (its level is in here).
    process.stderr.write(`tidemark-backup-client: ${err.message}\n`);
    return 2;
  }
  const log = createLogger('backup-client', config.logLevel, process.stderr);
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'backup':
        return await backup(rest, log, config);
      case 'cleanup':
        return await cleanup(rest, log, config);
      case 'restore':
        return await restore(rest, log, config);
      case 'verify':
        return await verify(rest, log, config);
      case '--help':
      case 'help':
        process.stdout.write(`${USAGE}\n`);
        return 0;
      default:
        throw new UsageError(command ? `unknown command "${command}"` : 'a command is required');
    }
  } catch (err) {
    if (err instanceof UsageError || (err instanceof TypeError && 'code' in err)) {
      process.stderr.write(`tidemark-backup-client: ${err.message}\n${USAGE}\n`);
      log.error({ err: err.message }, 'usage error');
      return 2;
    }
    const e = err instanceof ClientError ? err : new ClientError('COPY_FAILED', String(err), true);
    send({
      type: 'result',
      status: 'failed',
      code: e.code,
      message: e.message,
      retryable: e.retryable,
    });
    log.error({ code: e.code, err: e.message }, 'failed');
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`tidemark-backup-client: ${String(err)}\n`);
      process.exit(1);
    },
  );
}
