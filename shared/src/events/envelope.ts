import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { ValidationError, describeIssues, type FieldIssue } from '../errors';
import { toFieldIssues } from '../validate';
import { knownFailure } from './failure-codes';
import { JobId } from './ids';
import {
  AlertDataV1,
  CancelDataV1,
  CompletedDataV1,
  FailedDataV1,
  FailedDataV2,
  ProgressDataV1,
  StartDataV1,
  jobTypes,
  type JobType,
} from './schemas';

/**
 * Every event type, with its data schema per published version. A published version is never
 * edited: a change adds an optional field, or a new version whose upcaster turns it (or the old
 * one) into the current shape at parse time.
 */
export const eventVersions = {
  'backup.start': { 1: StartDataV1 },
  'backup.progress': { 1: ProgressDataV1 },
  'backup.completed': { 1: CompletedDataV1 },
  'backup.failed': { 1: FailedDataV1, 2: FailedDataV2 },
  'backup.cancel': { 1: CancelDataV1 },
  'backup.alert': { 1: AlertDataV1 },
} as const;

export type EventType = keyof typeof eventVersions;
export const eventTypes = Object.keys(eventVersions) as EventType[];

/** The current data shape of each event type. */
export interface EventDataMap {
  'backup.start': z.output<typeof StartDataV1>;
  'backup.progress': z.output<typeof ProgressDataV1>;
  'backup.completed': z.output<typeof CompletedDataV1>;
  'backup.failed': z.output<typeof FailedDataV2>;
  'backup.cancel': z.output<typeof CancelDataV1>;
  'backup.alert': z.output<typeof AlertDataV1>;
}

/** The input shape (defaults may be left out) a publisher hands to `makeEvent`. */
export interface EventInputMap {
  'backup.start': z.input<typeof StartDataV1>;
  'backup.progress': z.input<typeof ProgressDataV1>;
  'backup.completed': z.input<typeof CompletedDataV1>;
  'backup.failed': z.input<typeof FailedDataV2>;
  'backup.cancel': z.input<typeof CancelDataV1>;
  'backup.alert': z.input<typeof AlertDataV1>;
}

/** The version `makeEvent` writes of each type: its newest. */
export const currentVersions = Object.fromEntries(
  eventTypes.map((type) => [type, Math.max(...Object.keys(eventVersions[type]).map(Number))]),
) as { readonly [T in EventType]: number };

/**
 * How the data of an older version becomes the current shape, by type and version. Every
 * version but the current one has its upcaster (a unit test says so).
 */
export const upcasters: {
  readonly [T in EventType]?: Readonly<Record<number, (data: never) => EventDataMap[T]>>;
} = {
  // A v1 code outside the table is kept as CLIENT_FAILED, the code leading the message.
  'backup.failed': {
    1: (data: z.output<typeof FailedDataV1>) => ({
      ...data,
      ...knownFailure(data.code, data.message),
    }),
  },
};

/** The largest event body a consumer accepts, in bytes. Larger ones are dead-lettered. */
export const MAX_EVENT_BYTES = 64 * 1024;

export const EnvelopeSchema = z.object({
  /** Unique per event; also the JetStream `Nats-Msg-Id`, so a retried publish is dropped. */
  id: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces'),
  type: z.enum(eventTypes as [EventType, ...EventType[]], {
    error: (issue) => `unknown event type ${JSON.stringify(issue.input)}`,
  }),
  /** Schema version of `data`. */
  version: z.number().int().min(1),
  /** When the state change happened (ISO-8601 with offset). */
  occurredAt: z.iso.datetime({ offset: true }),
  jobId: JobId,
  /** Backups and replications go through the same events and the same code. */
  jobType: z.enum(jobTypes),
  data: z.unknown(),
});

export interface TidemarkEvent<T extends EventType = EventType> {
  id: string;
  type: T;
  version: number;
  occurredAt: string;
  jobId: string;
  jobType: JobType;
  data: EventDataMap[T];
}

export type AnyEvent = { [T in EventType]: TidemarkEvent<T> }[EventType];

export type ParseResult =
  { ok: true; event: AnyEvent } | { ok: false; reason: string; issues: FieldIssue[] };

/** Validates raw bytes into an event: size, JSON, envelope, known type and version, data. */
export function parseEvent(body: Uint8Array, maxBytes = MAX_EVENT_BYTES): ParseResult {
  if (body.byteLength > maxBytes) {
    return fail('event too large', [
      { path: '', message: `body is ${body.byteLength} bytes; the limit is ${maxBytes}` },
    ]);
  }
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch (err) {
    return fail('not JSON', [{ path: '', message: (err as Error).message }]);
  }
  const env = EnvelopeSchema.safeParse(json);
  if (!env.success) {
    const issues = toFieldIssues(env.error);
    return fail(`invalid envelope: ${issues.map((i) => i.path || '(body)').join(', ')}`, issues);
  }
  const { type, version } = env.data;
  const versions: Record<number, z.ZodType> = eventVersions[type];
  const schema = versions[version];
  if (!schema) {
    return fail(`unknown version ${version} of ${type}`, [
      { path: 'version', message: `known versions: ${Object.keys(versions).join(', ')}` },
    ]);
  }
  const data = schema.safeParse(env.data.data);
  if (!data.success) {
    const issues = toFieldIssues(data.error, 'data');
    return fail(`invalid ${type} data: ${issues.map((i) => i.path).join(', ')}`, issues);
  }
  // `version` stays what was sent; `data` is in the current shape.
  const upcast = version === currentVersions[type] ? undefined : upcasters[type]?.[version];
  const current: unknown = upcast ? (upcast as (d: unknown) => unknown)(data.data) : data.data;
  return { ok: true, event: { ...env.data, data: current } as AnyEvent };
}

function fail(reason: string, issues: FieldIssue[]): ParseResult {
  return { ok: false, reason, issues };
}

/** Builds a valid event (throws a ValidationError naming the field if `data` is not). */
export function makeEvent<T extends EventType>(
  type: T,
  fields: {
    jobId: string;
    jobType: JobType;
    data: EventInputMap[T];
    id?: string;
    occurredAt?: Date;
  },
): TidemarkEvent<T> {
  const version = currentVersions[type];
  const schema: z.ZodType = (eventVersions[type] as Record<number, z.ZodType>)[version];
  const parsed = schema.safeParse(fields.data);
  if (!parsed.success) {
    const issues = toFieldIssues(parsed.error, 'data');
    throw invalidEvent(type, issues);
  }
  const event = {
    id: fields.id ?? randomUUID(),
    type,
    version,
    occurredAt: (fields.occurredAt ?? new Date()).toISOString(),
    jobId: fields.jobId,
    jobType: fields.jobType,
    data: parsed.data as EventDataMap[T],
  };
  const env = EnvelopeSchema.safeParse(event);
  if (!env.success) throw invalidEvent(type, toFieldIssues(env.error));
  return event;
}

function invalidEvent(type: EventType, issues: FieldIssue[]): ValidationError {
  return new ValidationError(`${type} event is invalid: ${describeIssues(issues)}`, issues);
}
