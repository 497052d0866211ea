// The public face of @tidemark/shared: every name a service, a test or a third-party publisher may
// import, listed (as nats.js's mod.ts lists its own). Import from '@tidemark/shared' only; a name
// not here is internal to the package.
export {
  ConfigError,
  ConflictError,
  describeIssues,
  ErrorCode,
  type FieldIssue,
  NotFoundError,
  TidemarkError,
  UnavailableError,
  ValidationError,
} from './errors';
export { parseOrThrow, toFieldIssues } from './validate';
export { commonConfigShape, parseConfig } from './config';
export { createLogger, forJob, type Logger, redactPaths, redactUrl } from './log';
export {
  ByteCount,
  ChangeId,
  DirPath,
  DiskKey,
  DiskSource,
  FilePath,
  JobId,
  RecordId,
  VmName,
} from './events/ids';
export {
  type AlertData,
  AlertDataV1,
  AlertKind,
  BackupType,
  backupTypes,
  type CancelData,
  CancelDataV1,
  type CompletedData,
  CompletedDataV1,
  type CompletedDiskData,
  type FailedData,
  FailedDataV1,
  FailedDataV2,
  JobType,
  jobTypes,
  type ProgressData,
  ProgressDataV1,
  ProgressPhase,
  type StartData,
  StartDataV1,
} from './events/schemas';
export {
  FailureCode,
  type FailureCodeInfo,
  failureCodes,
  FailureCodeSchema,
  isFailureCode,
  isRetryable,
  knownFailure,
  ReportedCode,
} from './events/failure-codes';
export {
  type AnyEvent,
  currentVersions,
  EnvelopeSchema,
  type EventDataMap,
  type EventInputMap,
  type EventType,
  eventTypes,
  eventVersions,
  makeEvent,
  MAX_EVENT_BYTES,
  parseEvent,
  type ParseResult,
  type TidemarkEvent,
  upcasters,
} from './events/envelope';
export {
  RepositoryRoot,
  SHARED_DIRECTORIES,
  SYSTEM_TREES,
  systemDirectoryReason,
} from './system-dirs';
export { busTopology, type BusTopology } from './nats/topology';
export {
  type DeadLetter,
  DeadLetterSchema,
  encodePayload,
  MAX_DEAD_PAYLOAD_BYTES,
} from './nats/deadletter';
export {
  deadLetter,
  type DurableOptions,
  ensureDurable,
  ensureStreams,
  publishEvent,
  type StreamOptions,
} from './nats/jetstream';
export { natsConnectOptions, type NatsSettings } from './nats/connect';
export {
  askLedger,
  type DiskView,
  JobStatus,
  jobStatuses,
  type JobView,
  parseQuery,
  type PolicyView,
  type QueryInput,
  type QueryName,
  queryNames,
  type QueryReply,
  type QueryRequest,
  type QueryResults,
  querySchemas,
  type RepositoryView,
  type VmView,
} from './queries';
export { eventJsonSchemas } from './json-schema';
export * as api from './api';
