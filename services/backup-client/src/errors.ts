/** Stable failure codes of the backup client (they become `backup.failed`'s `code`). */
export const ClientErrorCode = {
  /** The previous change_id is unknown, missing or inconsistent: only a full backup is safe. */
  FULL_BACKUP_REQUIRED: 'FULL_BACKUP_REQUIRED',
  /** The source cannot be read (missing, wrong format, locked by another process). */
  SOURCE_UNAVAILABLE: 'SOURCE_UNAVAILABLE',
  /** The target cannot be written (exists, missing backing file, wrong size). */
  TARGET_INVALID: 'TARGET_INVALID',
  /** Copying failed (NBD or qemu tool error). */
  COPY_FAILED: 'COPY_FAILED',
  /** The client was interrupted (SIGINT/SIGTERM) and cleaned up. */
  INTERRUPTED: 'INTERRUPTED',
  /** Verify found a chain that does not hold what was written. */
  VERIFY_FAILED: 'VERIFY_FAILED',
} as const;
export type ClientErrorCode = (typeof ClientErrorCode)[keyof typeof ClientErrorCode];

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
