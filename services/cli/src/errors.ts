import type { Job } from './api';

/** Exit codes of `tidemark`, documented in the README. */
export const ExitCode = {
  Ok: 0,
  /** The hub refused the request, could not be reached, or a followed job failed. */
  Failure: 1,
  /** Bad command line: unknown command or option, missing or invalid argument. */
  Usage: 2,
  /** A followed job was cancelled. */
  Cancelled: 3,
  /** Ctrl-C while following; the job itself goes on. */
  Interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** A bad value given on the command line or in the environment. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A followed job ended failed or cancelled; `message` says how, for stderr. */
export class JobEndedError extends Error {
  override name = 'JobEndedError';
  constructor(
    readonly job: Job,
    message: string,
  ) {
    super(message);
  }

  get exitCode(): ExitCode {
    return this.job.status === 'cancelled' ? ExitCode.Cancelled : ExitCode.Failure;
  }
}
