import { ConflictError, NotFoundError, ValidationError } from '@tidemark/shared';
import { uniqueName } from '../support/env';
import {
  completedData,
  createLedgerWorld,
  seedReferences,
  startData,
  type LedgerWorld,
} from '../support/ledger-harness';

describe('ledger: queries over NATS request/reply', () => {
  let world: LedgerWorld;
  let refs: { repositoryId: string; policyId: string };

  beforeAll(async () => {
    world = await createLedgerWorld();
    await world.startLedger();
    refs = await seedReferences(world);
  });
  afterAll(() => world.close());

  it('creates and lists repositories, policies and VMs; a duplicate name is a conflict', async () => {
    const name = uniqueName('repo');
    const repo = await world.ask('repositories.create', { name, path: '/srv/backups' });
    expect(repo).toMatchObject({ id: expect.stringMatching(/^repo-/), name, path: '/srv/backups' });
    await expect(
      world.ask('repositories.create', { name, path: '/elsewhere' }),
    ).rejects.toBeInstanceOf(ConflictError);
    // Whoever asks (the hub, or anyone on the bus), `/` or a system directory is no root.
    for (const path of ['/', '/etc']) {
      await expect(
        world.ask('repositories.create', { name: uniqueName('repo'), path }),
      ).rejects.toMatchObject({
        message: expect.stringContaining('must not be / or a system directory'),
      });
    }
    expect((await world.ask('repositories.list', {})).map((r) => r.name)).toContain(name);
    expect(await world.ask('repositories.get', { id: repo.id })).toEqual(repo);
    await expect(world.ask('repositories.get', { id: 'repo-none' })).rejects.toBeInstanceOf(
      NotFoundError,
    );

    expect((await world.ask('policies.list', {})).map((p) => p.id)).toContain(refs.policyId);

    const vmName = uniqueName('pgtest');
    const disks = [
      { diskKey: 'disk-0', driver: 'qemu' as const, path: '/var/lib/vms/a.qcow2' },
      { diskKey: 'disk-1', driver: 'qemu' as const, path: '/var/lib/vms/b.qcow2' },
    ];
    await world.ask('vms.create', { vmName, disks });
    expect(await world.ask('vms.get', { vmName })).toMatchObject({ vmName, disks });
    await expect(world.ask('vms.create', { vmName, disks })).rejects.toBeInstanceOf(ConflictError);
    await expect(world.ask('vms.get', { vmName: 'nope' })).rejects.toBeInstanceOf(NotFoundError);
  });

  it('answers a bad request with the failing field', async () => {
    const err = await world
      .ask('vms.create', { vmName: '../etc', disks: [] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).issues.map((i) => i.path)).toEqual(['vmName', 'disks']);
  });

  it('creates a job through jobs.create, and the backup.start that follows changes nothing', async () => {
    const vmName = uniqueName('vm');
    const jobId = uniqueName('backup-');
    const job = await world.ask('jobs.create', {
      jobId,
      jobType: 'backup',
      ...startData(refs.repositoryId, vmName),
    });
    expect(job).toMatchObject({
      jobId,
      status: 'queued',
      parentJobId: null,
      disks: [{ diskKey: 'disk-2000', changeId: null }],
    });
    // The hub publishes backup.start with the job id as event id.
    await world.publish('backup.start', jobId, startData(refs.repositoryId, vmName), { id: jobId });
    await world.drained();
    expect(await world.deadLetters()).toEqual([]);
    await expect(
      world.ask('jobs.create', {
        jobId: uniqueName('backup-'),
        jobType: 'backup',
        ...startData(refs.repositoryId, vmName),
      }),
    ).rejects.toThrow(new ConflictError(`VM ${vmName} already has an active backup job ${jobId}`));
    await expect(
      world.ask('jobs.create', {
        jobId: uniqueName('backup-'),
        jobType: 'backup',
        ...startData('repo-none', uniqueName('vm')),
      }),
    ).rejects.toBeInstanceOf(NotFoundError);
  });

  it('fails a queued job through jobs.fail, and leaves an ended job as it was', async () => {
    const vmName = uniqueName('vm');
    const jobId = uniqueName('backup-');
    await world.ask('jobs.create', {
      jobId,
      jobType: 'backup',
      ...startData(refs.repositoryId, vmName),
    });
    const failed = await world.ask('jobs.fail', {
      jobId,
      code: 'START_NOT_PUBLISHED',
      message: 'NATS did not store backup.start',
      retryable: true,
    });
    expect(failed).toMatchObject({
      status: 'failed',
      errorCode: 'START_NOT_PUBLISHED',
      retryable: true,
    });
    const again = await world.ask('jobs.fail', {
      jobId,
      code: 'OTHER',
      message: 'x',
      retryable: false,
    });
    expect(again).toMatchObject({ status: 'failed', errorCode: 'START_NOT_PUBLISHED' });
    await expect(
      world.ask('jobs.fail', { jobId: 'nope', code: 'X', message: 'x', retryable: false }),
    ).rejects.toBeInstanceOf(NotFoundError);
  });

  it('gives the chain head: the latest completed job with per-disk change_ids, none for only a failure', async () => {
    const vmName = uniqueName('vm');
    const disks = ['disk-0', 'disk-1'];
    const full = uniqueName('backup-');
    await world.publish('backup.start', full, startData(refs.repositoryId, vmName, disks));
    await world.publish(
      'backup.completed',
      full,
      completedData(refs.repositoryId, vmName, [
        { diskKey: 'disk-0', changeId: 'a/1', bytesTransferred: 1 },
        { diskKey: 'disk-1', changeId: 'b/1', bytesTransferred: 1 },
      ]),
    );
    const incr = uniqueName('backup-');
    await world.publish(
      'backup.start',
      incr,
      startData(refs.repositoryId, vmName, disks, { backupType: 'incremental', parentJobId: full }),
    );
    await world.publish(
      'backup.completed',
      incr,
      completedData(
        refs.repositoryId,
        vmName,
        [
          { diskKey: 'disk-0', changeId: 'a/2', bytesTransferred: 1 },
          { diskKey: 'disk-1', changeId: 'b/2', bytesTransferred: 1 },
        ],
        { backupType: 'incremental', parentJobId: full },
      ),
    );
    const failed = uniqueName('backup-');
    await world.publish(
      'backup.start',
      failed,
      startData(refs.repositoryId, vmName, disks, { backupType: 'incremental', parentJobId: incr }),
    );
    await world.publish('backup.failed', failed, {
      code: 'COPY_FAILED',
      message: 'disk gone',
      retryable: false,
    });
    await world.drained();

    const head = await world.ask('chain-head', { vmName });
    expect(head).toMatchObject({ jobId: incr, parentJobId: full, status: 'completed' });
    expect(head?.disks.map((d) => [d.diskKey, d.changeId])).toEqual([
      ['disk-0', 'a/2'],
      ['disk-1', 'b/2'],
    ]);
    expect(await world.ask('chain-head', { vmName, jobType: 'replication' })).toBeNull();

    const lonely = uniqueName('vm');
    const only = uniqueName('backup-');
    await world.publish('backup.start', only, startData(refs.repositoryId, lonely));
    await world.publish('backup.failed', only, {
      code: 'COPY_FAILED',
      message: 'no',
      retryable: true,
    });
    await world.drained();
    expect(await world.ask('chain-head', { vmName: lonely })).toBeNull();

    const listed = await world.ask('jobs.list', { vmName, status: 'completed' });
    expect(listed.map((j) => j.jobId).sort()).toEqual([full, incr].sort());
    expect(await world.ask('jobs.get', { jobId: failed })).toMatchObject({
      status: 'failed',
      errorCode: 'COPY_FAILED',
      retryable: false,
    });
    await expect(world.ask('jobs.get', { jobId: 'nope' })).rejects.toBeInstanceOf(NotFoundError);
  });
});
