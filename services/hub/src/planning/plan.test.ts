import { ConflictError, type DiskView, type JobView } from '@tidemark/shared';
import { planJob, type PlanRequest } from './plan';

const vm = {
  vmName: 'pgtest1',
  disks: [
    { diskKey: 'disk-0', driver: 'qemu', path: '/var/lib/vms/pgtest1/disk0.qcow2' },
    { diskKey: 'disk-1', driver: 'qemu', path: '/var/lib/vms/pgtest1/disk1.qcow2' },
  ],
  createdAt: '2026-11-22T08:00:00.000Z',
};
const repository = {
  id: 'repo-1',
  name: 'main',
  path: '/srv/tidemark/',
  createdAt: '2026-11-22T08:00:00.000Z',
};

function disk(diskKey: string, changeId: string | null, targetPath: string | null): DiskView {
  return {
    diskKey,
    source: null,
    changeId,
    previousChangeId: null,
    bytesTransferred: 1,
    bytesTotal: 2,
    targetPath,
    backingPath: null,
    fullReason: null,
    canary: null,
    changeTracking: null,
  };
}

function head(jobId: string, disks: DiskView[], extra: Partial<JobView> = {}): JobView {
  return {
    jobId,
    jobType: 'backup',
    vmName: 'pgtest1',
    backupType: 'full',
    repositoryId: 'repo-1',
    policyId: null,
    parentJobId: null,
    status: 'completed',
    changeId: null,
    bytesTransferred: 3,
    errorCode: null,
    errorMessage: null,
    retryable: null,
    progress: null,
    createdAt: '2026-11-22T08:00:00.000Z',
    startedAt: '2026-11-22T08:00:01.000Z',
    completedAt: '2026-11-22T08:01:00.000Z',
    disks,
    ...extra,
  };
}

const fullHead = head('backup-a', [
  disk('disk-0', 'uuid-0/7', '/srv/tidemark/pgtest1/backup-a/disk-0.qcow2'),
  disk('disk-1', 'uuid-1/7', '/srv/tidemark/pgtest1/backup-a/disk-1.qcow2'),
]);

function request(extra: Partial<PlanRequest>): PlanRequest {
  return {
    jobId: 'backup-b',
    jobType: 'backup',
    requested: 'full',
    vm,
    repository,
    chainHead: null,
    policyId: null,
    ...extra,
  };
}

describe('planJob', () => {
  it('plans a full backup: every disk from scratch, one new file per disk under the job', () => {
    expect(planJob(request({ requested: 'full', chainHead: fullHead }))).toEqual({
      vmName: 'pgtest1',
      backupType: 'full',
      repositoryId: 'repo-1',
      repositoryPath: '/srv/tidemark',
      policyId: null,
      parentJobId: null,
      ifChangeIdUnusable: 'fail',
      disks: [
        {
          diskKey: 'disk-0',
          source: '/var/lib/vms/pgtest1/disk0.qcow2',
          previousChangeId: null,
          targetPath: '/srv/tidemark/pgtest1/backup-b/disk-0.qcow2',
          backingPath: null,
          fullReason: null,
          chainHeads: [],
        },
        {
          diskKey: 'disk-1',
          source: '/var/lib/vms/pgtest1/disk1.qcow2',
          previousChangeId: null,
          targetPath: '/srv/tidemark/pgtest1/backup-b/disk-1.qcow2',
          backingPath: null,
          fullReason: null,
          chainHeads: [],
        },
      ],
    });
  });

  it("plans an incremental backup on the chain head: each disk's change_id, backed by the parent's file", () => {
    const plan = planJob(request({ requested: 'incremental', chainHead: fullHead, policyId: 'p' }));
    expect(plan).toMatchObject({
      backupType: 'incremental',
      parentJobId: 'backup-a',
      policyId: 'p',
    });
    expect(plan.disks).toEqual([
      expect.objectContaining({
        diskKey: 'disk-0',
        previousChangeId: 'uuid-0/7',
        targetPath: '/srv/tidemark/pgtest1/backup-b/disk-0.qcow2',
        backingPath: '/srv/tidemark/pgtest1/backup-a/disk-0.qcow2',
      }),
      expect.objectContaining({
        diskKey: 'disk-1',
        previousChangeId: 'uuid-1/7',
        backingPath: '/srv/tidemark/pgtest1/backup-a/disk-1.qcow2',
      }),
    ]);
  });

  it('copies a disk the chain head lacks in full, inside an incremental', () => {
    const partial = head('backup-a', [disk('disk-0', 'uuid-0/7', '/srv/x/disk-0.qcow2')]);
    const plan = planJob(request({ requested: 'incremental', chainHead: partial }));
    expect(plan.backupType).toBe('incremental');
    expect(plan.disks[1]).toMatchObject({
      diskKey: 'disk-1',
      previousChangeId: null,
      backingPath: null,
      fullReason: expect.stringMatching(/backup-a recorded no change_id for disk disk-1/),
    });
    expect(plan.disks[0]?.fullReason).toBeNull();
  });

  it('lets auto copy an unusable disk in full, and has an explicit incremental fail instead', () => {
    expect(planJob(request({ requested: 'auto', chainHead: fullHead })).ifChangeIdUnusable).toBe(
      'full',
    );
    expect(
      planJob(request({ requested: 'incremental', chainHead: fullHead })).ifChangeIdUnusable,
    ).toBe('fail');
  });

  it('copies in full a backup disk whose parent file is unknown (reported without a target)', () => {
    const noTarget = head('backup-a', [
      disk('disk-0', 'uuid-0/7', null),
      disk('disk-1', 'uuid-1/7', '/srv/x/disk-1.qcow2'),
    ]);
    const plan = planJob(request({ requested: 'auto', chainHead: noTarget }));
    expect(plan.disks.map((d) => [d.previousChangeId, d.backingPath])).toEqual([
      [null, null],
      ['uuid-1/7', '/srv/x/disk-1.qcow2'],
    ]);
  });

  it('resolves auto to incremental with a chain head, and to full without one', () => {
    expect(planJob(request({ requested: 'auto', chainHead: fullHead }))).toMatchObject({
      backupType: 'incremental',
      parentJobId: 'backup-a',
    });
    expect(planJob(request({ requested: 'auto', chainHead: null }))).toMatchObject({
      backupType: 'full',
      parentJobId: null,
    });
  });

  it('refuses an incremental without a chain head, naming backupType', () => {
    const attempt = () => planJob(request({ requested: 'incremental', chainHead: null }));
    expect(attempt).toThrow(ConflictError);
    expect(attempt).toThrow(
      expect.objectContaining({
        message: 'no incremental backup possible: VM pgtest1 has no completed backup',
        issues: [{ path: 'backupType', message: expect.stringContaining('ask for a full backup') }],
      }),
    );
  });

  it('does not build on a chain head in another repository: incremental is refused, auto is full', () => {
    const elsewhere = { ...fullHead, repositoryId: 'repo-2' };
    expect(() => planJob(request({ requested: 'incremental', chainHead: elsewhere }))).toThrow(
      /is in repository repo-2, not repo-1/,
    );
    expect(planJob(request({ requested: 'auto', chainHead: elsewhere })).backupType).toBe('full');
  });

  it('does not build on a chain head that recorded no change_id for any disk of the VM', () => {
    const empty = head('backup-a', [disk('disk-0', null, '/srv/x/disk-0.qcow2')]);
    expect(() => planJob(request({ requested: 'incremental', chainHead: empty }))).toThrow(
      ConflictError,
    );
    expect(planJob(request({ requested: 'auto', chainHead: empty })).parentJobId).toBeNull();
  });

  it('plans a replication into one replica per disk, updated in place, never backed', () => {
    const replicaHead = head(
      'replication-a',
      [
        disk('disk-0', 'uuid-0/3', '/srv/tidemark/pgtest1/replica/disk-0.qcow2'),
        disk('disk-1', 'uuid-1/3', null),
      ],
      { jobType: 'replication' },
    );
    const plan = planJob(
      request({
        jobId: 'replication-b',
        jobType: 'replication',
        requested: 'incremental',
        chainHead: replicaHead,
      }),
    );
    expect(plan).toMatchObject({ backupType: 'incremental', parentJobId: 'replication-a' });
    expect(plan.disks).toEqual([
      expect.objectContaining({
        previousChangeId: 'uuid-0/3',
        targetPath: '/srv/tidemark/pgtest1/replica/disk-0.qcow2',
        backingPath: null,
      }),
      expect.objectContaining({
        previousChangeId: 'uuid-1/3',
        targetPath: '/srv/tidemark/pgtest1/replica/disk-1.qcow2',
        backingPath: null,
      }),
    ]);
    const full = planJob(request({ jobId: 'replication-c', jobType: 'replication' }));
    expect(full.disks[0]).toMatchObject({
      previousChangeId: null,
      targetPath: '/srv/tidemark/pgtest1/replica/disk-0.qcow2',
    });
  });

  it("tells each disk what every chain's head recorded for it, so their superseded tracking can go", () => {
    const replicaHead = head('replication-a', [disk('disk-0', 'uuid-0/9', '/r/disk-0.qcow2')], {
      jobType: 'replication',
      repositoryId: 'repo-2',
    });
    const plan = planJob(
      request({ requested: 'auto', chainHead: fullHead, chainHeads: [fullHead, replicaHead] }),
    );
    expect(plan.disks.map((d) => d.chainHeads)).toEqual([
      [
        { jobType: 'backup', repositoryId: 'repo-1', changeId: 'uuid-0/7' },
        { jobType: 'replication', repositoryId: 'repo-2', changeId: 'uuid-0/9' },
      ],
      [{ jobType: 'backup', repositoryId: 'repo-1', changeId: 'uuid-1/7' }],
    ]);
  });
});
