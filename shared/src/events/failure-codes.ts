import { z } from 'zod';

/** What a failure code means, and whether a job failed with it is worth running again. */
export interface FailureCodeInfo {
  /** The default for `retryable` where the one who fails the job knows no better. */
  readonly retryable: boolean;
  /** One line for the operator (README "Failure codes" shows the same). */
  readonly meaning: string;
}

/**
 * Every code a job can fail with (`backup.failed`'s `code`, the ledger's `error_code`), as
 * nats.js keeps JetStream's API codes in one table. A new code is added here, with its meaning,
 * and to README's table (a test compares the two).
 */
export const FailureCode = {
  FULL_BACKUP_REQUIRED: {
    retryable: false,
    meaning:
      'the previous change_id cannot be honoured (tracking lost or inconsistent, disk resized or replaced): only a full backup is safe',
  },
  SOURCE_UNAVAILABLE: {
    retryable: false,
    meaning:
      'a source cannot be read (missing, not qcow2, no such block node); retryable when another process only holds it or its daemon does not answer',
  },
  TARGET_INVALID: {
    retryable: false,
    meaning:
      'a target cannot be written: it exists already, its backing file is missing, or it does not fit the job',
  },
  REPOSITORY_FULL: {
    retryable: false,
    meaning:
      'the repository is out of space (seen before the copy or on a write): no partial file left, chains as they were; run once freed',
  },
  COPY_FAILED: {
    retryable: true,
    meaning: 'copying failed: an NBD or qemu tool error, or one of the client itself',
  },
  INTERRUPTED: {
    retryable: true,
    meaning: 'the copy was stopped (a signal, or its runner stopping) and cleaned up',
  },
  CLIENT_NOT_STARTED: {
    retryable: true,
    meaning: 'the runner could not start the backup client',
  },
  CLIENT_EXITED: {
    retryable: true,
    meaning: 'the backup client exited without a result',
  },
  CLIENT_OUTPUT_INVALID: {
    retryable: true,
    meaning: 'the backup client printed lines that are not its protocol, and no result',
  },
  CLIENT_FAILED: {
    retryable: false,
    meaning:
      'a failure reported with a code this table does not hold (a client or publisher of another version); that code leads the message',
  },
  REPOSITORY_UNKNOWN: {
    retryable: true,
    meaning: "the start names no repository root and the ledger did not give the repository's",
  },
  PATH_OUTSIDE_REPOSITORY: {
    retryable: false,
    meaning:
      'a target or backing path leads out of its repository (symlinks resolved); nothing was written',
  },
  SOURCE_NOT_ALLOWED: {
    retryable: false,
    meaning:
      "a source (an image, a live disk's QMP or NBD socket) is not below the runner's TIDEMARK_SOURCE_ROOTS (symlinks resolved); nothing was opened",
  },
  TOO_MANY_ATTEMPTS: {
    retryable: false,
    meaning: 'the job was started as often as runners may try it, and no runner finished it',
  },
  CANCELLED: {
    retryable: false,
    meaning: "cancelled on request: the attempt's files are removed, the old change_ids stay valid",
  },
  START_NOT_PUBLISHED: {
    retryable: true,
    meaning: 'the hub created the job but its backup.start never reached the bus',
  },
  LEASE_EXPIRED: {
    retryable: true,
    meaning:
      "the job's runner stopped reporting for longer than the ledger's lease (a completion that still comes is recorded)",
  },
  COMPLETION_REJECTED: {
    retryable: false,
    meaning:
      "the ledger refused the job's completion; the source keeps its previous change tracking",
  },
} as const satisfies Record<string, FailureCodeInfo>;
export type FailureCode = keyof typeof FailureCode;

export const failureCodes = Object.keys(FailureCode) as [FailureCode, ...FailureCode[]];

/** A code of the table: what `backup.failed` v2 carries. */
export const FailureCodeSchema = z.enum(failureCodes);

/**
 * A code as `backup.failed` v1 and the ledger's `jobs.fail` take it: any UPPER_SNAKE_CASE word,
 * so every one a publisher of those ever sent is still read (through `knownFailure`).
 */
export const ReportedCode = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Z0-9_]+$/, 'must be UPPER_SNAKE_CASE');

export function isFailureCode(code: string): code is FailureCode {
  return Object.hasOwn(FailureCode, code);
}

/** Whether a job failed with `code` is worth running again, where nothing more is known. */
export function isRetryable(code: FailureCode): boolean {
  return FailureCode[code].retryable;
}

/**
 * A reported failure in the table's terms: a code the table holds stays; any other becomes
 * CLIENT_FAILED, the reported code (when it is one) leading the message, so nothing is lost.
 */
export function knownFailure(
  code: string,
  message: string,
): { code: FailureCode; message: string } {
  if (isFailureCode(code)) return { code, message };
  const reported = ReportedCode.safeParse(code).success ? `${code}: ` : '';
  return { code: 'CLIENT_FAILED', message: `${reported}${message}`.slice(0, 4096) };
}
