// Follows a job until it ends: polls the hub and shows progress on stderr, as a redrawn bar on
// a terminal, else as one plain line per change (logs and pipes can read those).
import { Presets, SingleBar } from 'cli-progress';
import { ApiError, HubUnreachableError, isFinished, type Job } from './api';
import { etaSeconds, formatBytes, formatDuration, formatRate } from './format';
import { progressLine } from './views';

/** Where progress goes: a terminal gets the bar. */
export type ProgressStream = NodeJS.WritableStream & { isTTY?: boolean };

export interface FollowOptions {
  /** Between polls; default 500 ms. */
  intervalMs?: number;
  /** How long the hub may stay unavailable (503, no answer) before following gives up; default 30 s. */
  patienceMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

interface Reporter {
  update(job: Job): void;
  stop(): void;
}

/** Polls `getJob` until the job is completed, failed or cancelled, and returns it as it ended. */
export async function followJob(
  getJob: () => Promise<Job>,
  stream: ProgressStream,
  options: FollowOptions = {},
): Promise<Job> {
  const intervalMs = options.intervalMs ?? 500;
  const patienceMs = options.patienceMs ?? 30_000;
  const sleep = options.sleep ?? ((ms) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = options.now ?? Date.now;
  const reporter = stream.isTTY === true ? barReporter(stream) : lineReporter(stream);
  let unavailableSince: number | null = null;
  try {
    for (;;) {
      let job: Job;
      try {
        job = await getJob();
        unavailableSince = null;
      } catch (err) {
        // The job goes on without the hub; a short outage should not end the following.
        if (!isTransient(err)) throw err;
        unavailableSince ??= now();
        if (now() - unavailableSince >= patienceMs) throw err;
        await sleep(intervalMs);
        continue;
      }
      reporter.update(job);
      if (isFinished(job.status)) return job;
      await sleep(intervalMs);
    }
  } finally {
    reporter.stop();
  }
}

function isTransient(err: unknown): boolean {
  return err instanceof HubUnreachableError || (err instanceof ApiError && err.status === 503);
}

function lineReporter(stream: ProgressStream): Reporter {
  let last = '';
  return {
    update(job) {
      const line = progressLine(job);
      if (line !== last) stream.write(`${line}\n`);
      last = line;
    },
    stop() {},
  };
}

function barReporter(stream: ProgressStream): Reporter {
  const bar = new SingleBar(
    {
      stream,
      format: '{phase} [{bar}] {percentage}% | {done} / {size} | {rate} | ETA {remaining}',
      barsize: 30,
      emptyOnZero: true,
      hideCursor: false,
      gracefulExit: false,
    },
    Presets.shades_classic,
  );
  let started = false;
  // A finished job may carry no progress any more: keep the amounts last seen.
  let total = 0;
  let done = 0;
  return {
    update(job) {
      const p = job.progress;
      total = p?.bytes_total ?? total;
      done = p?.bytes_done ?? done;
      if (job.status === 'completed') {
        // A full bar, even if the last progress event said less.
        total ||= job.bytes_transferred ?? 0;
        done = total;
      }
      const rate = isFinished(job.status) ? 0 : (p?.bytes_per_second ?? 0);
      const payload = {
        phase: p && !isFinished(job.status) ? p.phase : job.status,
        done: formatBytes(done),
        size: total > 0 ? formatBytes(total) : '?',
        rate: formatRate(rate),
        remaining: formatDuration(isFinished(job.status) ? 0 : etaSeconds(done, total, rate)),
      };
      if (!started) {
        bar.start(total, done, payload);
        started = true;
        return;
      }
      if (bar.getTotal() !== total) bar.setTotal(total);
      bar.update(done, payload);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
