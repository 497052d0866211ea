#!/usr/bin/env node
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger, forJob, type Logger } from '@tidemark/shared/log';
import { JobId } from '@tidemark/shared/events/ids';
import { ChangeId } from '@tidemark/shared/events/ids';
import { z } from 'zod';
import { DEFAULT_CANARY, type CanaryOptions } from './copy/canary';
import { ClientError } from './errors';
import { ClientJobSpec, runJob, type ClientJob } from './job';
import { ProgressReporter } from './progress';
import { ClientEnv, COMMIT_LINE, formatLine, type ClientLine, type ResultLine } from './protocol';
import { stopAllServers } from './qemu/process';
import { restoreChain } from './restore';
import { QemuImageDriver } from './source/qemu-image';
import { QemuLiveDriver } from './source/qemu-live';
import { verifyChain } from './verify';

const USAGE = `usage:
  tidemark-backup-client backup --job <file | ->
      env: ${ClientEnv.JobId} (required), ${ClientEnv.PreviousChangeId} (JSON {"<disk key>": "<change_id>"},
           or one change_id for a one-disk job)
  tidemark-backup-client restore --from <chain top .qcow2> --to <new file> [--format raw|qcow2]
  tidemark-backup-client verify <chain top .qcow2>
stdout: JSON lines (progress, then one result); stderr: JSON log lines.
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

/** Applies the previous change_ids from the environment to the job's disks; it must agree with the job file. */
function applyPreviousChangeIds(spec: ClientJobSpec, raw: string | undefined): void {
  if (raw === undefined || raw === '') return;
  let byDisk: Record<string, string | null>;
  const trimmed = raw.trim();
  if (trimmed.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(trimmed);
    } catch {
      throw new UsageError(`${ClientEnv.PreviousChangeId}: starts with "{" but is not JSON`);
    }
    const parsed = z.record(z.string(), ChangeId.nullable()).safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new UsageError(
        `${ClientEnv.PreviousChangeId}: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`,
      );
    }
    byDisk = parsed.data;
  } else {
    if (spec.disks.length !== 1)
      throw new UsageError(
        `${ClientEnv.PreviousChangeId}: a job with several disks needs a JSON object {"<disk key>": "<change_id>"}`,
      );
    const parsed = ChangeId.safeParse(trimmed);
    if (!parsed.success)
      throw new UsageError(`${ClientEnv.PreviousChangeId}: ${parsed.error.issues[0]?.message}`);
    byDisk = { [(spec.disks[0] as { diskKey: string }).diskKey]: parsed.data };
  }
  const keys = new Set(spec.disks.map((d) => d.diskKey));
  for (const key of Object.keys(byDisk))
    if (!keys.has(key))
      throw new UsageError(`${ClientEnv.PreviousChangeId}: disk "${key}" is not a disk of the job`);
  for (const disk of spec.disks) {
    if (!(disk.diskKey in byDisk)) continue;
    const fromEnv = byDisk[disk.diskKey] ?? null;
    if (disk.previousChangeId !== null && disk.previousChangeId !== fromEnv)
      throw new UsageError(
        `${ClientEnv.PreviousChangeId}: disk "${disk.diskKey}" is ${JSON.stringify(fromEnv)} but the job says ${JSON.stringify(disk.previousChangeId)}`,
      );
    disk.previousChangeId = fromEnv;
  }
}

async function backup(args: string[], log: Logger): Promise<number> {
  const { values } = parseArgs({ args, options: { job: { type: 'string' } }, strict: true });
  // The job id comes first: without it nothing is read, opened or copied.
  const jobIdRaw = process.env[ClientEnv.JobId];
  if (jobIdRaw === undefined || jobIdRaw === '')
    throw new UsageError(
      `${ClientEnv.JobId} is not set: the client refuses to copy a disk whose change_id it could not report`,
    );
  const jobId = JobId.safeParse(jobIdRaw);
  if (!jobId.success) throw new UsageError(`${ClientEnv.JobId}: ${jobId.error.issues[0]?.message}`);
  if (!values.job) throw new UsageError('--job <file | -> is required');
  const spec = readJobSpec(values.job);
  applyPreviousChangeIds(spec, process.env[ClientEnv.PreviousChangeId]);
  const job: ClientJob = { ...spec, jobId: jobId.data };
  const copy = copyTuning();
  const canary = canaryTuning();
  const jobLog = forJob(log, job.jobId, { jobType: job.jobType });

  const workDir = mkdtempSync(
    join(socketSafeBase(process.env[ClientEnv.WorkDir]), 'tidemark-client-'),
  );
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
  const underRunner = process.env[ClientEnv.ExitWithParent] === '1';
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
  }
  const intervalMs = Number(process.env[ClientEnv.ProgressIntervalMs] ?? 1000);
  const progress = new ProgressReporter(job.jobId, send, intervalMs > 0 ? intervalMs : 1000);
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
      copy,
      canary,
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
      code: 'INTERRUPTED',
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

/** Bytes of a Unix socket path (sockaddr_un.sun_path on Linux, less its NUL). */
const SUN_PATH_MAX = 107;
/** Room the client's sockets need below its work directory (`/live-<tag>.sock` and the like). */
const SOCKET_NAME_ROOM = 48;

/**
 * Where the client's work directory goes: `ClientEnv.WorkDir` (else the system temp dir), unless
 * its sockets would not fit a Unix socket path there (qemu-nbd refuses them: "too long"); then
 * the system temp dir, or /tmp.
 */
export function socketSafeBase(wanted: string | undefined): string {
  const fits = (dir: string) =>
    Buffer.byteLength(join(dir, 'tidemark-client-XXXXXX')) + SOCKET_NAME_ROOM <= SUN_PATH_MAX;
  return [wanted, tmpdir(), '/tmp'].find((d): d is string => !!d && fits(d)) ?? '/tmp';
}

/**
 * Optional copy tuning: the request size, the requests in flight and a read-rate
 * limit (MB = 10^6 bytes, per disk).
 */
function copyTuning(): { chunkSize?: number; inFlight?: number; maxBytesPerSecond?: number } {
  const out: { chunkSize?: number; inFlight?: number; maxBytesPerSecond?: number } = {};
  const mbps = process.env[ClientEnv.CopyMaxMbps];
  if (mbps !== undefined && mbps !== '') {
    const n = Number(mbps);
    if (!Number.isFinite(n) || n <= 0 || n > 100_000)
      throw new UsageError(`${ClientEnv.CopyMaxMbps}: must be a number above 0, not "${mbps}"`);
    out.maxBytesPerSecond = n * 1e6;
  }
  const kib = process.env[ClientEnv.CopyChunkKib];
  if (kib !== undefined && kib !== '') {
    const n = Number(kib);
    if (!Number.isInteger(n) || n < 64 || n > 32768 || n % 64 !== 0)
      throw new UsageError(
        `${ClientEnv.CopyChunkKib}: must be a multiple of 64 from 64 to 32768, not "${kib}"`,
      );
    out.chunkSize = n * 1024;
  }
  const inFlight = process.env[ClientEnv.CopyInFlight];
  if (inFlight !== undefined && inFlight !== '') {
    const n = Number(inFlight);
    if (!Number.isInteger(n) || n < 1 || n > 256)
      throw new UsageError(
        `${ClientEnv.CopyInFlight}: must be a whole number from 1 to 256, not "${inFlight}"`,
      );
    out.inFlight = n;
  }
  return out;
}

/**
 * The CBT canary of each incremental disk: `ClientEnv.CanaryBlocks` blocks (default 64; 0 turns
 * it off) of `ClientEnv.CanaryBlockKib` (default 64), sampled with `ClientEnv.CanarySeed` when set.
 */
function canaryTuning(): CanaryOptions {
  const whole = (name: string, min: number, max: number, fallback: number): number => {
    const raw = process.env[name];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new UsageError(`${name}: must be a whole number from ${min} to ${max}, not "${raw}"`);
    return n;
  };
  const blocks = whole(ClientEnv.CanaryBlocks, 0, 65536, DEFAULT_CANARY.blocks);
  const kib = whole(ClientEnv.CanaryBlockKib, 4, 4096, DEFAULT_CANARY.blockSize / 1024);
  const seed = whole(ClientEnv.CanarySeed, 0, 2 ** 32 - 1, -1);
  return { blocks, blockSize: kib * 1024, ...(seed >= 0 ? { seed } : {}) };
}

async function restore(args: string[], log: Logger): Promise<number> {
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
  const workDir = mkdtempSync(
    join(process.env[ClientEnv.WorkDir] || tmpdir(), 'tidemark-restore-'),
  );
  try {
    const r = await restoreChain(values.from, values.to, values.format, { workDir, log, out });
    out({ type: 'result', status: 'completed', ...r });
    return 0;
  } finally {
    await stopAllServers();
    rmSync(workDir, { recursive: true, force: true });
  }
}

async function verify(args: string[], log: Logger): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, strict: true });
  const image = positionals[0];
  if (!image || positionals.length > 1) throw new UsageError('verify takes one image path');
  const workDir = mkdtempSync(join(process.env[ClientEnv.WorkDir] || tmpdir(), 'tidemark-verify-'));
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
  const level = process.env.TIDEMARK_LOG_LEVEL || 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) {
    process.stderr.write(
      `tidemark-backup-client: TIDEMARK_LOG_LEVEL: must be fatal, error, warn, info, debug, trace or silent, not "${level}"\n`,
    );
    return 2;
  }
  const log = createLogger('backup-client', level, process.stderr);
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'backup':
        return await backup(rest, log);
      case 'restore':
        return await restore(rest, log);
      case 'verify':
        return await verify(rest, log);
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
