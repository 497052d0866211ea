/** A field path and what is wrong with it, as shown to users and written into dead letters. */
export interface FieldIssue {
  /** Dotted path of the failing field, e.g. `data.disks.0.changeId`; `''` for the whole value. */
  path: string;
  message: string;
}

export const ErrorCode = {
  Validation: 'VALIDATION',
  NotFound: 'NOT_FOUND',
  Conflict: 'CONFLICT',
  Unavailable: 'UNAVAILABLE',
  Config: 'CONFIG',
  Internal: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Base of every error Tidemark raises on purpose; `code` is stable and safe to match on. */
export class TidemarkError extends Error {
  override name = 'TidemarkError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly issues: FieldIssue[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export class ValidationError extends TidemarkError {
  override name = 'ValidationError';
  constructor(message: string, issues: FieldIssue[] = [], options?: { cause?: unknown }) {
    super(ErrorCode.Validation, message, issues, options);
  }
}

export class NotFoundError extends TidemarkError {
  override name = 'NotFoundError';
  constructor(message: string, issues: FieldIssue[] = []) {
    super(ErrorCode.NotFound, message, issues);
  }
}

export class ConflictError extends TidemarkError {
  override name = 'ConflictError';
  constructor(message: string, issues: FieldIssue[] = []) {
    super(ErrorCode.Conflict, message, issues);
  }
}

/** A dependency (NATS, MySQL, the ledger) did not answer; the caller may retry later. */
export class UnavailableError extends TidemarkError {
  override name = 'UnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.Unavailable, message, [], options);
  }
}

export class ConfigError extends TidemarkError {
  override name = 'ConfigError';
  constructor(message: string, issues: FieldIssue[]) {
    super(ErrorCode.Config, message, issues);
  }
}

/** Renders zod-style issues as "path: message; path: message". */
export function describeIssues(issues: FieldIssue[]): string {
  return issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
}
