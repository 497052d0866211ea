import type { z } from 'zod';
import { ValidationError, describeIssues, type FieldIssue } from './errors';

/** Converts zod issues into field issues with dotted paths. */
export function toFieldIssues(error: z.ZodError, prefix = ''): FieldIssue[] {
  return error.issues.map((issue) => {
    const path = [prefix, ...issue.path.map((p) => String(p))].filter((p) => p !== '').join('.');
    return { path, message: issue.message };
  });
}

/** Parses `value` with `schema`, or throws a ValidationError naming every failing field. */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  what: string,
  prefix = '',
): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues = toFieldIssues(result.error, prefix);
  throw new ValidationError(`${what} is invalid: ${describeIssues(issues)}`, issues);
}
