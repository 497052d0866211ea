import type { StartData } from '@tidemark/shared';
import { completedEvent, failedEvent, resultEvent, type ResultContext } from './result';

const start: StartData = {
  vmName: 'vm1',
  backupType: 'incremental',
  repositoryId: 'repo-1',
  policyId: 'policy-1',
  parentJobId: 'job-0',
  ifChangeIdUnusable: 'fail',
  disks: [
    {
      diskKey: 'd0',
      source: '/src/d0.qcow2',
      previousChangeId: 'u/1',
      targetPath: '/r/vm1/job-1/d0.qcow2',
      backingPath: '/r/vm1/job-0/d0.qcow2',
      fullReason: null,
      chainHeads: [],
    },
  ],
};
const job: ResultContext = { jobId: 'job-1', jobType: 'replication', start };
const disk = {
  diskKey: 'd0',
  changeId: 'u/2',
  bytesTransferred: 100,
  targetPath: '/r/vm1/job-1/d0.qcow2',
  bytesTotal: 1000,
  fullReason: null,
  canary: { sampledBytes: 64, mismatchedBytes: 0 },
};

describe('the event a run of the client ends with', () => {
  it('given a completed copy, then a completion with its disks, the client total and the job context', () => {
    const e = resultEvent(
      job,
      { status: 'completed', disks: [disk], bytesTransferred: 123 },
      undefined,
      'r1',
    );
    expect(e).toMatchObject({
      id: 'r1',
      type: 'backup.completed',
      jobId: 'job-1',
      jobType: 'replication',
      data: {
        vmName: 'vm1',
        backupType: 'incremental',
        repositoryId: 'repo-1',
        policyId: 'policy-1',
        parentJobId: 'job-0',
        disks: [disk],
        bytesTransferred: 123,
      },
    });
  });

  it('given a completed copy and a cancel that came too late, then it is still a completion', () => {
    const e = resultEvent(
      job,
      { status: 'completed', disks: [disk], bytesTransferred: 100 },
      'operator asked',
      'r2',
    );
    expect(e.type).toBe('backup.completed');
  });

  it('given a failed run after a cancel, then the failure is the cancel: CANCELLED with its reason, not retryable', () => {
    const e = resultEvent(
      job,
      {
        status: 'failed',
        code: 'INTERRUPTED',
        message: 'stopped',
        retryable: true,
        finishedDisks: [disk],
      },
      'operator asked',
      'r3',
    );
    expect(e).toMatchObject({
      type: 'backup.failed',
      data: { code: 'CANCELLED', message: 'operator asked', retryable: false, finishedDisks: [] },
    });
  });

  it("given a failed run, then the client's own failure, with the disks that did finish", () => {
    const e = resultEvent(
      job,
      {
        status: 'failed',
        code: 'COPY_FAILED',
        message: 'read error',
        retryable: true,
        finishedDisks: [disk],
      },
      undefined,
      'r4',
    );
    expect(e).toMatchObject({
      id: 'r4',
      type: 'backup.failed',
      data: {
        code: 'COPY_FAILED',
        message: 'read error',
        retryable: true,
        finishedDisks: [disk],
        vmName: 'vm1',
        backupType: 'incremental',
        repositoryId: 'repo-1',
      },
    });
  });

  it("given an earlier attempt's finished disks, then a completion totalling them", () => {
    const e = completedEvent(job, [disk, { ...disk, diskKey: 'd1', bytesTransferred: 50 }]);
    expect(e.data.bytesTransferred).toBe(150);
    expect(e.id).toMatch(/./);
  });

  it('given a refusal, then a failure under the id given (a redelivered refusal is one event)', () => {
    const e = failedEvent(
      job,
      { code: 'COPY_FAILED', message: 'm', retryable: false },
      'job-1.failed.x',
    );
    expect(e).toMatchObject({
      id: 'job-1.failed.x',
      data: { code: 'COPY_FAILED', finishedDisks: [] },
    });
  });
});
