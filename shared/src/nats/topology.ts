import type { EventType } from '../events/envelope';

/**
 * Names of every stream, subject and durable consumer. One prefix moves a whole deployment (or
 * one test) onto its own names; the default (empty prefix) is the production layout:
 * stream `BACKUP` on `backup.>`, stream `DEAD_BACKUP` on `dead.backup`, queries on `ledger.>`.
 */
export interface BusTopology {
  prefix: string;
  /** JetStream stream holding every backup event. */
  stream: string;
  /** Subjects of `stream`. */
  eventSubjects: string;
  /** Stream of dead letters, apart so that no consumer of backup events sees them. */
  deadStream: string;
  deadSubject: string;
  /** Durable consumer names. */
  ledgerConsumer: string;
  runnerConsumer: string;
  subjectFor(type: EventType): string;
  /** Subject of a ledger query (request/reply), e.g. `ledger.jobs.get`. */
  querySubject(name: string): string;
  /** Wildcard the ledger's query service listens on. */
  queryWildcard: string;
}

export function busTopology(prefix = ''): BusTopology {
  if (!/^[A-Za-z0-9_-]*$/.test(prefix)) {
    throw new RangeError(
      `bus prefix ${JSON.stringify(prefix)} may hold only letters, digits, "_" and "-"`,
    );
  }
  const sp = prefix ? `${prefix}.` : '';
  const np = prefix ? `${prefix}_` : '';
  return {
    prefix,
    stream: `${np}BACKUP`,
    eventSubjects: `${sp}backup.>`,
    deadStream: `${np}DEAD_BACKUP`,
    deadSubject: `${sp}dead.backup`,
    ledgerConsumer: `${np}ledger`,
    runnerConsumer: `${np}appliance-runner`,
    subjectFor: (type) => `${sp}${type}`,
    querySubject: (name) => `${sp}ledger.${name}`,
    queryWildcard: `${sp}ledger.>`,
  };
}
