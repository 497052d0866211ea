import type { FailureCode } from '@tidemark/shared';

/**
 * The failure codes the backup client raises (they become `backup.failed`'s `code`); what each
 * means is in shared's `FailureCode` table.
 */
export type ClientErrorCode = Extract<
  FailureCode,
  | 'FULL_BACKUP_REQUIRED'
  | 'SOURCE_UNAVAILABLE'
  | 'TARGET_INVALID'
  | 'REPOSITORY_FULL'
  | 'COPY_FAILED'
  | 'INTERRUPTED'
>;

export class ClientError extends Error {
  override readonly name: string = 'ClientError';
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The typed "full backup required" outcome: never a silent full copy labelled incremental. */
export class FullBackupRequiredError extends ClientError {
  override readonly name = 'FullBackupRequiredError';
  constructor(
    message: string,
    readonly changeId: string | null,
  ) {
    super('FULL_BACKUP_REQUIRED', message, false);
  }
}
