import type { CompletedDiskData, JobView } from '@tidemark/shared';
import { admit, LEDGER_WAIT_MS, type AdmissionFacts, type Refusal } from './admission';

const LOCK_WAIT = 30_000;

const facts = (extra: Partial<AdmissionFacts> = {}): AdmissionFacts => ({
  jobId: 'job-1',
  jobType: 'backup',
  attempt: 1,
  maxAttempts: 3,
  ...extra,
});

const recorded = (status: JobView['status'], errorMessage: string | null = null) =>
  ({ jobId: 'job-1', status, errorMessage }) as JobView;

/** Every fact known and harmless: a first attempt the ledger has queued. */
const clear: Partial<AdmissionFacts> = {
  record: recorded('queued'),
  paths: null,
  lock: 'held',
  earlier: null,
};

const finished: CompletedDiskData[] = [
  {
    diskKey: 'd0',
    changeId: 'u/2',
    bytesTransferred: 5,
    targetPath: '/r/d0.qcow2',
    bytesTotal: 9,
    fullReason: null,
    canary: null,
  },
];

describe('admission of a backup.start delivery', () => {
  it('given nothing gathered, then it asks for the ledger record first', () => {
    expect(admit(facts(), LOCK_WAIT)).toEqual({ kind: 'need', fact: 'record' });
  });

  it('given a delivery past the attempt cap, then it is refused TOO_MANY_ATTEMPTS, one event per job, before any I/O', () => {
    const d = admit(facts({ attempt: 4 }), LOCK_WAIT);
    expect(d).toMatchObject({
      kind: 'refuse',
      eventId: 'job-1.failed.attempts',
      refusal: { code: 'TOO_MANY_ATTEMPTS', retryable: false },
    });
    expect(d.kind === 'refuse' && d.refusal.message).toMatch(/started 3 times/);
    // The last allowed attempt still runs.
    expect(admit(facts({ attempt: 3, ...clear }), LOCK_WAIT)).toMatchObject({ kind: 'run' });
  });

  it('given a redelivery the ledger cannot answer for, then it waits: it may have completed', () => {
    expect(admit(facts({ attempt: 2, record: 'unavailable' }), LOCK_WAIT)).toEqual({
      kind: 'nak-later',
      delayMs: LEDGER_WAIT_MS,
      why: expect.stringContaining('ledger does not answer'),
    });
  });

  it('given a first delivery the ledger cannot answer for, then it goes on (nothing of it exists yet)', () => {
    expect(admit(facts({ record: 'unavailable' }), LOCK_WAIT)).toEqual({
      kind: 'need',
      fact: 'paths',
    });
    expect(admit(facts({ ...clear, record: 'unknown' }), LOCK_WAIT)).toEqual({
      kind: 'run',
      cleanFirst: false,
    });
  });

  it('given a job the ledger recorded completed, then it is never run again', () => {
    expect(admit(facts({ attempt: 2, record: recorded('completed') }), LOCK_WAIT)).toMatchObject({
      kind: 'ack-done',
    });
  });

  it.each(['PATH_OUTSIDE_REPOSITORY', 'SOURCE_NOT_ALLOWED'] as const)(
    'given %s (a path or source outside the roots), then the job is refused before any lock is taken',
    (code) => {
      const refusal: Refusal = { code, message: 'no', retryable: false };
      expect(admit(facts({ record: 'unknown' }), LOCK_WAIT)).toEqual({
        kind: 'need',
        fact: 'paths',
      });
      expect(admit(facts({ record: 'unknown', paths: refusal }), LOCK_WAIT)).toEqual({
        kind: 'refuse',
        refusal,
        eventId: 'job-1.failed.paths',
      });
    },
  );

  it('given safe paths, then it asks for the lock; held by another attempt, it tries later', () => {
    expect(admit(facts({ record: 'unknown', paths: null }), LOCK_WAIT)).toEqual({
      kind: 'need',
      fact: 'lock',
    });
    expect(admit(facts({ ...clear, lock: 'busy' }), LOCK_WAIT)).toEqual({
      kind: 'nak-later',
      delayMs: LOCK_WAIT,
      why: expect.stringContaining('another attempt'),
    });
  });

  it("given a redelivered backup, then it looks for the earlier attempt's finished copy and replays it", () => {
    const redo = facts({ ...clear, attempt: 2, earlier: undefined });
    expect(admit(redo, LOCK_WAIT)).toEqual({ kind: 'need', fact: 'earlier' });
    expect(admit({ ...redo, earlier: finished }, LOCK_WAIT)).toEqual({
      kind: 'replay-finished-copy',
      disks: finished,
    });
    expect(admit({ ...redo, earlier: null }, LOCK_WAIT)).toEqual({ kind: 'run', cleanFirst: true });
  });

  it('given a redelivered replication, then its replica stays: no replay, no clean start', () => {
    const redo = facts({ ...clear, attempt: 2, jobType: 'replication', earlier: undefined });
    expect(admit(redo, LOCK_WAIT)).toEqual({ kind: 'run', cleanFirst: false });
  });

  it('given a cancel the ledger recorded or the bus carried, then the job is dropped (cleaned if redone)', () => {
    expect(
      admit(facts({ ...clear, record: recorded('cancelled', 'operator asked') }), LOCK_WAIT),
    ).toEqual({ kind: 'ack-cancelled', reason: 'operator asked', cleanFirst: false });
    expect(admit(facts({ ...clear, record: recorded('cancelled') }), LOCK_WAIT)).toMatchObject({
      reason: 'cancelled on request',
    });
    expect(admit(facts({ ...clear, attempt: 2, cancelHeard: 'stop' }), LOCK_WAIT)).toEqual({
      kind: 'ack-cancelled',
      reason: 'stop',
      cleanFirst: true,
    });
  });

  it('given a cancelled job whose earlier attempt had finished, then the finished copy is reported: real points are never dropped', () => {
    expect(
      admit(
        facts({ ...clear, attempt: 2, record: recorded('cancelled'), earlier: finished }),
        LOCK_WAIT,
      ),
    ).toMatchObject({ kind: 'replay-finished-copy' });
  });

  it('given a job the ledger failed (its lease expired), then a start delivered again never copies it anew', () => {
    const failed = { ...recorded('failed'), errorCode: 'LEASE_EXPIRED' } as JobView;
    expect(admit(facts({ ...clear, attempt: 2, record: failed }), LOCK_WAIT)).toEqual({
      kind: 'ack-failed',
      code: 'LEASE_EXPIRED',
      cleanFirst: true,
    });
    expect(admit(facts({ ...clear, record: failed }), LOCK_WAIT)).toMatchObject({
      kind: 'ack-failed',
      cleanFirst: false,
    });
    // Its earlier attempt's finished copy is still reported: a completion outranks the failure.
    expect(
      admit(facts({ ...clear, attempt: 2, record: failed, earlier: finished }), LOCK_WAIT),
    ).toMatchObject({ kind: 'replay-finished-copy' });
  });

  it('given everything clear, then a first attempt runs as it is', () => {
    expect(admit(facts(clear), LOCK_WAIT)).toEqual({ kind: 'run', cleanFirst: false });
  });
});
