import { spawn } from 'node:child_process';
import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import {
  isRetryable,
  knownFailure,
  type CompletedDiskData,
  type FailureCode,
  type JobType,
  type Logger,
  type StartData,
} from '@tidemark/shared';
import {
  ClientEnv,
  COMMIT_LINE,
  tuningEnv,
  parseLine,
  type ParsedLine,
} from '@tidemark/backup-client/protocol';

/** A progress line of the client, as the runner relays it. */
export type ClientProgress = Extract<ParsedLine, { type: 'progress' }>;

export type ClientOutcome =
  | { status: 'completed'; disks: CompletedDiskData[]; bytesTransferred: number }
  | {
      status: 'failed';
      code: FailureCode;
      message: string;
      retryable: boolean;
      finishedDisks: CompletedDiskData[];
    };

export interface ClientRun {
  /**
   * The client's result: as soon as it prints a completed one (it then waits for `commit()`),
   * else when it has exited.
   */
  outcome: Promise<ClientOutcome>;
  /**
   * Tells the client the ledger recorded its result: it may forget the old change tracking.
   */
  commit(): void;
  /**
   * Tells the client its result was not recorded (the ledger refused it): it keeps the old
   * change tracking, so the previous change_id stays usable, and exits.
   */
  keepTracking(): void;
  /** Resolves when the client process has exited. */
  exited: Promise<void>;
  /**
   * Once exited: whether it died without its own teardown (killed by a signal, or gone without
   * a result line) — what it made may be left behind (see `cleanUpAfter`).
   */
  abnormal(): boolean;
  /** Asks the client to stop (SIGTERM: it cleans up and exits); SIGKILL after `graceMs`. */
  stop(graceMs?: number): void;
}

/**
 * Starts `tidemark-backup-client backup` for one job: no shell, arguments as an array, the job
 * id and every disk's previous change_id in its environment (the change_id a copy produces is
 * only ever lost when the client does not know which job it belongs to).
 */
export async function startClient(opts: {
  clientMain: string;
  jobId: string;
  jobType: JobType;
  start: StartData;
  workDir: string;
  log: Logger;
  onProgress: (p: ClientProgress) => void;
  /** A disk's point in time was taken (its copy starts now). */
  onPointInTime: (diskKey: string) => void;
}): Promise<ClientRun> {
  const jobFile = join(opts.workDir, `${opts.jobId}.job.json`);
  await writeFile(jobFile, JSON.stringify({ jobType: opts.jobType, ...opts.start }));
  const previous = Object.fromEntries(
    opts.start.disks.map((d) => [d.diskKey, d.previousChangeId] as const),
  );
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    [ClientEnv.JobId]: opts.jobId,
    [ClientEnv.PreviousChangeId]: JSON.stringify(previous),
    [ClientEnv.WorkDir]: opts.workDir,
    TIDEMARK_LOG_LEVEL: process.env.TIDEMARK_LOG_LEVEL ?? 'info',
    // The client stops when our end of its stdin closes: it never outlives a dead runner.
    [ClientEnv.ExitWithParent]: '1',
  };
  // Copy and canary tuning are the operator's to set on the runner; they pass through.
  for (const key of tuningEnv) if (process.env[key]) env[key] = process.env[key];
  const child = spawn(process.execPath, [opts.clientMain, 'backup', '--job', jobFile], {
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let result: ClientOutcome | undefined;
  let resolveOutcome: (o: ClientOutcome) => void = () => undefined;
  let garbage = 0;
  const stdout = createInterface({ input: child.stdout });
  stdout.on('line', (text) => {
    const line = parseLine(text);
    if (!line) {
      garbage++;
      opts.log.warn({ line: text.slice(0, 500) }, 'client printed a line that is not its protocol');
      return;
    }
    if (line.type === 'progress') opts.onProgress(line);
    else if (line.type === 'point-in-time') opts.onPointInTime(line.diskKey);
    else if (line.status === 'completed') {
      result = { status: 'completed', disks: line.disks, bytesTransferred: line.bytesTransferred };
      resolveOutcome(result);
    } else
      result = {
        status: 'failed',
        // A code this runner does not know (another client version's) goes out as CLIENT_FAILED.
        ...knownFailure(
          line.code,
          line.message.slice(0, 4000) || 'the client failed without a message',
        ),
        retryable: line.retryable,
        finishedDisks: line.finishedDisks,
      };
  });
  const stderr = createInterface({ input: child.stderr });
  let lastStderr = '';
  stderr.on('line', (text) => {
    lastStderr = text;
    // The client logs JSON lines of its own (with jobId); pass them on as they are.
    opts.log.debug({ client: text.slice(0, 2000) }, 'client log');
  });
  let abnormal = false;
  const exited = new Promise<void>((resolve) =>
    child.once('close', (_code, signal) => {
      abnormal = signal !== null || result === undefined;
      resolve();
    }),
  );
  const outcome = new Promise<ClientOutcome>((resolve) => {
    resolveOutcome = resolve;
    let spawnError: Error | undefined;
    child.on('error', (err) => (spawnError = err));
    child.on('close', (code, signal) => {
      void rm(jobFile, { force: true });
      if (spawnError)
        return resolve(
          fail('CLIENT_NOT_STARTED', `cannot start the backup client: ${spawnError.message}`),
        );
      if (result && (result.status === 'failed' || code === 0)) return resolve(result);
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      if (garbage > 0 && !result)
        return resolve(
          fail(
            'CLIENT_OUTPUT_INVALID',
            `the backup client ${how} and printed ${garbage} line(s) that are not its protocol, no result`,
          ),
        );
      resolve(
        fail(
          'CLIENT_EXITED',
          `the backup client ${how} without a result${lastStderr ? `; last log: ${lastStderr.slice(0, 500)}` : ''}`,
        ),
      );
    });
  });
  child.stdin.on('error', () => undefined); // the client may be gone already
  return {
    outcome,
    exited,
    abnormal: () => abnormal,
    commit() {
      child.stdin.end(COMMIT_LINE);
    },
    keepTracking() {
      child.stdin.end(); // closed without COMMIT_LINE: the client never commits
    },
    stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      child.once('exit', () => clearTimeout(timer));
    },
  };
}

/**
 * Runs `tidemark-backup-client cleanup` for a job whose client died without its teardown: it
 * removes the exports, backup jobs and fleece nodes its run left in the daemons of running disks
 * (named by the job) and its work directories. Says what it removed, or why it could not.
 */
export async function cleanUpAfter(opts: {
  clientMain: string;
  jobId: string;
  jobType: JobType;
  start: StartData;
  workDir: string;
  timeoutMs?: number;
}): Promise<{ ok: boolean; removed: string[]; detail: string }> {
  const jobFile = join(opts.workDir, `${opts.jobId}.cleanup.json`);
  await writeFile(jobFile, JSON.stringify({ jobType: opts.jobType, ...opts.start }));
  try {
    const child = spawn(process.execPath, [opts.clientMain, 'cleanup', '--job', jobFile], {
      env: {
        PATH: process.env.PATH,
        [ClientEnv.JobId]: opts.jobId,
        [ClientEnv.WorkDir]: opts.workDir,
        TIDEMARK_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    const code = await new Promise<number | null>((resolve) => {
      child.once('error', () => resolve(null));
      child.once('close', (c) => resolve(c));
    });
    clearTimeout(timer);
    let removed: string[] = [];
    try {
      removed =
        (JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { removed?: string[] }).removed ??
        [];
    } catch {
      // no line: the detail says why
    }
    return { ok: code === 0, removed, detail: stderr.slice(-1000) };
  } finally {
    await rm(jobFile, { force: true });
  }
}

/** A failure of the runner's own finding; retryable as the table says. */
function fail(code: FailureCode, message: string): ClientOutcome {
  return { status: 'failed', code, message, retryable: isRetryable(code), finishedDisks: [] };
}
