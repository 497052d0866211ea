import { makeEvent, type JobType, type TidemarkEvent } from '@tidemark/shared';
import type { ClientProgress } from './client-process';

/** Progress events at most this often per job (plus every phase change). */
export const PROGRESS_INTERVAL_MS = 1000;

export interface ProgressRelay {
  /** A progress line of the client's: relayed at most once a second, and at every phase change. */
  fromClient(p: ClientProgress): void;
  /** Called every heartbeat: re-sends the latest progress when nothing was sent for `everyMs`. */
  keepAlive(everyMs: number): void;
}

/**
 * Turns a job's client progress into `backup.progress` events handed to `send`. Sequences rise
 * across attempts (each attempt starts at attempt × 2^32), so a later attempt's events are never
 * "older" to the ledger. Once `done()` (the client's result is in) nothing is re-sent.
 */
export function progressRelay(
  job: { jobId: string; jobType: JobType },
  attempt: number,
  done: () => boolean,
  send: (event: TidemarkEvent<'backup.progress'>) => void,
): ProgressRelay {
  let sequence = attempt * 2 ** 32;
  let lastSent = 0; // any progress event, relayed or keep-alive
  let lastRelayed = 0; // the client's own, throttled
  let lastPhase = '';
  let latest: ClientProgress | undefined; // the client's newest line, relayed or not
  const emit = (p: ClientProgress): void => {
    lastPhase = p.phase;
    lastSent = Date.now();
    send(
      makeEvent('backup.progress', {
        jobId: job.jobId,
        jobType: job.jobType,
        data: {
          phase: p.phase,
          sequence: sequence++,
          disks: p.disks,
          bytesPerSecond: p.bytesPerSecond,
        },
      }),
    );
  };
  return {
    fromClient(p) {
      latest = p;
      const now = Date.now();
      if (p.phase === lastPhase && now - lastRelayed < PROGRESS_INTERVAL_MS) return;
      lastRelayed = now;
      emit(p);
    },
    keepAlive(everyMs) {
      // Nothing moved (a long flush, a slow source): say the job is alive all the same.
      if (latest && !done() && Date.now() - lastSent >= everyMs) emit(latest);
    },
  };
}
