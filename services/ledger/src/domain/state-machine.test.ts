import {
  makeEvent,
  type AnyEvent,
  type EventInputMap,
  type EventType,
  type JobType,
} from '@tidemark/shared';
import type { JobRecord } from './job';
import { decide, type ApplyContext, type Decision } from './state-machine';

const ctx: ApplyContext = {
  repositoryExists: (id) => id === 'repo-1',
  policyExists: (id) => id === 'policy-1',
  jobExists: (id) => id === 'job-parent',
  activeJobOf: () => null,
  heardAt: (e) => new Date(Date.parse(e.occurredAt) + 1000),
};

function ev<T extends EventType>(
  type: T,
  data: EventInputMap[T],
  jobType: JobType = 'backup',
): AnyEvent {
  return makeEvent(type, { jobId: 'job-1', jobType, data }) as AnyEvent;
}

const start = (jobType: JobType = 'backup') =>
  ev(
    'backup.start',
    {
      vmName: 'vm1',
      backupType: 'full',
      repositoryId: 'repo-1',
      disks: [
        { diskKey: 'd0', source: '/src/d0.qcow2', targetPath: '/repo/vm1/job-1/d0.qcow2' },
        { diskKey: 'd1', source: '/src/d1.qcow2', targetPath: '/repo/vm1/job-1/d1.qcow2' },
      ],
    },
    jobType,
  );
const progress = (sequence: number) =>
  ev('backup.progress', {
    phase: 'copying',
    sequence,
    bytesPerSecond: 10,
    disks: [{ diskKey: 'd0', bytesDone: sequence, bytesTotal: 100 }],
  });
const completed = (changeIds = ['u0/1', 'u1/1']) =>
  ev('backup.completed', {
    vmName: 'vm1',
    backupType: 'full',
    repositoryId: 'repo-1',
    bytesTransferred: 200,
    disks: changeIds.map((changeId, i) => ({ diskKey: `d${i}`, changeId, bytesTransferred: 100 })),
  });

function applied(decision: Decision): JobRecord {
  if (decision.kind !== 'apply') throw new Error(`expected apply, got ${JSON.stringify(decision)}`);
  return decision.job;
}

function run(...events: AnyEvent[]): JobRecord {
  let job: JobRecord | null = null;
  for (const e of events) {
    const d = decide(job, e, ctx);
    if (d.kind === 'apply') job = d.job;
  }
  if (!job) throw new Error('no job');
  return job;
}

describe('job state machine', () => {
  it('given nothing, when a job starts, then it is queued with its disks and null references', () => {
    const job = applied(decide(null, start(), ctx));
    expect(job.status).toBe('queued');
    expect(job.policyId).toBeNull();
    expect(job.parentJobId).toBeNull();
    expect([...job.disks.keys()]).toEqual(['d0', 'd1']);
  });

  it('given a queued job, when progress arrives, then it runs; an older progress is ignored', () => {
    const running = run(start(), progress(5));
    expect(running.status).toBe('running');
    expect(running.progress?.sequence).toBe(5);
    expect(decide(running, progress(3), ctx)).toMatchObject({ kind: 'ignore' });
    expect(decide(running, progress(5), ctx)).toMatchObject({ kind: 'ignore' });
  });

  it('given a running job, when it completes, then each disk keeps its own change_id', () => {
    const job = run(start(), progress(1), completed());
    expect(job.status).toBe('completed');
    expect(job.disks.get('d0')?.changeId).toBe('u0/1');
    expect(job.disks.get('d1')?.changeId).toBe('u1/1');
    expect(job.changeId).toBeNull(); // two disks: the per-disk rows hold them
  });

  it.each<JobType>(['backup', 'replication'])(
    'records the change_id of a one-disk %s job on the job',
    (jobType) => {
      const one = makeEvent('backup.start', {
        jobId: 'job-1',
        jobType,
        data: {
          vmName: 'vm1',
          backupType: 'full',
          repositoryId: 'repo-1',
          disks: [{ diskKey: 'd0', source: 's', targetPath: '/t' }],
        },
      }) as AnyEvent;
      const done = makeEvent('backup.completed', {
        jobId: 'job-1',
        jobType,
        data: {
          vmName: 'vm1',
          backupType: 'full',
          repositoryId: 'repo-1',
          bytesTransferred: 102000000000,
          disks: [{ diskKey: 'd0', changeId: 'uuid/9999', bytesTransferred: 102000000000 }],
        },
      }) as AnyEvent;
      const job = run(one, done);
      expect(job).toMatchObject({
        status: 'completed',
        changeId: 'uuid/9999',
        bytesTransferred: 102000000000,
        jobType,
      });
    },
  );

  it('given a completed job, then progress, a second completion and a failure change nothing', () => {
    const job = run(start(), completed());
    expect(decide(job, progress(99), ctx).kind).toBe('ignore');
    expect(decide(job, completed(), ctx).kind).toBe('ignore');
    expect(
      decide(
        job,
        ev('backup.failed', { code: 'COPY_FAILED', message: 'late', retryable: false }),
        ctx,
      ).kind,
    ).toBe('ignore');
  });

  it('given a completed job, when another completion reports other change_ids, then it is refused, naming both', () => {
    const job = run(start(), completed());
    expect(decide(job, completed(['u0/1', 'y/2']), ctx)).toMatchObject({
      kind: 'reject',
      code: 'CONFLICT',
      reason: expect.stringMatching(
        /already completed with change_id d1=u1\/1; this completion reports d1=y\/2/,
      ),
    });
  });

  it('given nothing, when the completion comes first, then the whole job is recorded, and the start only fills in', () => {
    const job = applied(decide(null, completed(), ctx));
    expect(job).toMatchObject({ status: 'completed', vmName: 'vm1', repositoryId: 'repo-1' });
    const merged = applied(decide(job, start(), ctx));
    expect(merged.status).toBe('completed');
    expect(merged.disks.get('d0')).toMatchObject({ changeId: 'u0/1', source: '/src/d0.qcow2' });
  });

  it('rejects a completion that lacks a disk of the job, naming the disk', () => {
    const job = run(start());
    const d = decide(job, completed(['u0/1']), ctx);
    expect(d).toMatchObject({ kind: 'reject', reason: expect.stringContaining('d1') });
  });

  it('rejects unknown repositories and policies, naming them', () => {
    const badRepo = ev('backup.start', {
      vmName: 'vm1',
      backupType: 'full',
      repositoryId: 'repo-nope',
      disks: [{ diskKey: 'd0', source: 's', targetPath: '/t' }],
    });
    expect(decide(null, badRepo, ctx)).toMatchObject({
      kind: 'reject',
      code: 'NOT_FOUND',
      issues: [{ path: 'data.repositoryId' }],
    });
    const badPolicy = ev('backup.start', {
      vmName: 'vm1',
      backupType: 'full',
      repositoryId: 'repo-1',
      policyId: 'policy-nope',
      disks: [{ diskKey: 'd0', source: 's', targetPath: '/t' }],
    });
    expect(decide(null, badPolicy, ctx)).toMatchObject({
      kind: 'reject',
      reason: expect.stringContaining('policy-nope'),
    });
  });

  it('refuses a second active job for the same VM and job type', () => {
    const busy = { ...ctx, activeJobOf: () => 'job-0' };
    expect(decide(null, start(), busy)).toMatchObject({ kind: 'reject', code: 'CONFLICT' });
  });

  it('defers progress for a job it does not know yet', () => {
    expect(decide(null, progress(1), ctx).kind).toBe('defer');
  });

  it('refuses an event whose job type differs from the recorded job', () => {
    const job = run(start('backup'));
    const repl = makeEvent('backup.progress', {
      jobId: 'job-1',
      jobType: 'replication',
      data: { phase: 'copying', sequence: 1, bytesPerSecond: 0, disks: [] },
    }) as AnyEvent;
    expect(decide(job, repl, ctx)).toMatchObject({ kind: 'reject', code: 'CONFLICT' });
  });

  it('keeps the change_ids of disks that finished before a failure', () => {
    const job = run(
      start(),
      ev('backup.failed', {
        code: 'COPY_FAILED',
        message: 'disk d1 read error',
        retryable: true,
        finishedDisks: [{ diskKey: 'd0', changeId: 'u0/7', bytesTransferred: 5 }],
      }),
    );
    expect(job).toMatchObject({ status: 'failed', errorCode: 'COPY_FAILED', retryable: true });
    expect(job.disks.get('d0')?.changeId).toBe('u0/7');
  });

  describe('a completion outranks every failure that was not a completion', () => {
    it.each([
      'TOO_MANY_ATTEMPTS',
      'LEASE_EXPIRED',
      'INTERRUPTED',
      'COPY_FAILED',
      'CLIENT_EXITED',
    ] as const)(
      'given a job failed %s, when its completion arrives, then the change_ids are recorded',
      (code) => {
        const failed = ev('backup.failed', { code, message: 'gone', retryable: false });
        const job = run(start(), progress(1), failed, completed(['u0/4', 'u1/4']));
        expect(job).toMatchObject({ status: 'completed', errorCode: null, errorMessage: null });
        expect([...job.disks.values()].map((d) => d.changeId)).toEqual(['u0/4', 'u1/4']);
      },
    );
  });

  describe('per-disk full copies and heartbeats', () => {
    const incrementalStart = ev('backup.start', {
      vmName: 'vm1',
      backupType: 'incremental',
      repositoryId: 'repo-1',
      parentJobId: 'job-parent',
      disks: [
        {
          diskKey: 'd0',
          source: '/src/d0.qcow2',
          previousChangeId: 'u0/1',
          targetPath: '/repo/vm1/job-1/d0.qcow2',
          backingPath: '/repo/vm1/job-parent/d0.qcow2',
        },
        {
          diskKey: 'd1',
          source: '/src/d1.qcow2',
          previousChangeId: 'u1/1',
          targetPath: '/repo/vm1/job-1/d1.qcow2',
          backingPath: '/repo/vm1/job-parent/d1.qcow2',
        },
      ],
    });

    it('given an incremental, when a disk reports a full copy, then it keeps why and loses its backing file; the other stays backed', () => {
      const done = ev('backup.completed', {
        vmName: 'vm1',
        backupType: 'incremental',
        repositoryId: 'repo-1',
        bytesTransferred: 200,
        disks: [
          { diskKey: 'd0', changeId: 'u0/2', bytesTransferred: 100, fullReason: 'bitmap gone' },
          { diskKey: 'd1', changeId: 'u1/2', bytesTransferred: 100 },
        ],
      });
      const job = run(incrementalStart, done);
      expect(job.disks.get('d0')).toMatchObject({ fullReason: 'bitmap gone', backingPath: null });
      expect(job.disks.get('d1')).toMatchObject({
        fullReason: null,
        backingPath: '/repo/vm1/job-parent/d1.qcow2',
      });
    });

    it('given a running job, when progress arrives, then its heartbeat is when the bus took it', () => {
      const p = progress(1);
      const job = run(start(), p);
      expect(job.heartbeatAt).toEqual(ctx.heardAt(p));
    });
  });

  describe('cancel', () => {
    const cancel = (reason: string | null = 'operator asked') => ev('backup.cancel', { reason });

    it.each([
      ['queued', [] as AnyEvent[]],
      ['running', [progress(1)]],
    ])(
      'given a %s job, when a cancel arrives, then it ends cancelled with the reason',
      (_, before) => {
        const job = run(start(), ...before, cancel());
        expect(job).toMatchObject({
          status: 'cancelled',
          errorCode: 'CANCELLED',
          errorMessage: 'operator asked',
          retryable: false,
        });
        expect(job.completedAt).toBeInstanceOf(Date);
      },
    );

    it("given a cancelled job, then progress and the runner's failure change nothing", () => {
      const job = run(start(), progress(1), cancel(null));
      expect(job.errorMessage).toBe('cancelled on request');
      expect(decide(job, progress(2), ctx).kind).toBe('ignore');
      const failed = ev('backup.failed', {
        code: 'CANCELLED',
        message: 'stopped',
        retryable: false,
      });
      expect(decide(job, failed, ctx).kind).toBe('ignore');
    });

    it('given a cancelled job whose copy had already finished, when its completion arrives, then the change_ids are recorded', () => {
      const job = run(start(), progress(1), cancel(), completed(['u0/3', 'u1/3']));
      expect(job).toMatchObject({ status: 'completed', errorCode: null, retryable: null });
      expect([...job.disks.values()].map((d) => d.changeId)).toEqual(['u0/3', 'u1/3']);
    });

    it('given a completed or failed job, when a cancel arrives, then nothing changes', () => {
      expect(decide(run(start(), completed()), cancel(), ctx).kind).toBe('ignore');
      const failed = ev('backup.failed', { code: 'COPY_FAILED', message: 'x', retryable: true });
      expect(decide(run(start(), failed), cancel(), ctx).kind).toBe('ignore');
    });

    it('given a running job, when its runner reports CANCELLED first, then it ends cancelled', () => {
      const job = run(
        start(),
        progress(1),
        ev('backup.failed', { code: 'CANCELLED', message: 'operator asked', retryable: false }),
      );
      expect(job).toMatchObject({ status: 'cancelled', errorCode: 'CANCELLED' });
    });

    it('defers a cancel for a job it does not know yet', () => {
      expect(decide(null, cancel(), ctx).kind).toBe('defer');
    });
  });
});
