import { uniqueName } from '../support/env';
import { lastStart, registerVm, streamCount, hubSuite } from '../support/hub-harness';
import { completedData } from '../support/ledger-harness';

interface Accepted {
  backup_id?: string;
  job_id?: string;
  job_type: string;
  status: string;
  backup_type: string;
  parent_backup_id: string | null;
  disks: {
    disk_key: string;
    previous_change_id: string | null;
    target_path: string;
    backing_path: string | null;
  }[];
}

const uuid = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';

describe('hub: starting backups and replications', () => {
  const suite = hubSuite('/srv/tidemark');

  /** Plays the runner: reports every disk of a started job done, with these change_ids. */
  async function complete(jobId: string, jobType: 'backup' | 'replication', changeIds: string[]) {
    const job = await suite.hub.call<{
      vm_name: string;
      backup_type: 'full' | 'incremental';
      parent_backup_id: string | null;
      disks: { disk_key: string; target_path: string }[];
    }>('GET', `/api/v1/backups/${jobId}`);
    await suite.world.publish(
      'backup.completed',
      jobId,
      completedData(
        suite.repo.id,
        job.body.vm_name,
        job.body.disks.map((d, i) => ({
          diskKey: d.disk_key,
          changeId: changeIds[i],
          bytesTransferred: 1000 + i,
          targetPath: d.target_path,
        })),
        { backupType: job.body.backup_type, parentJobId: job.body.parent_backup_id },
      ),
      { jobType },
    );
    await suite.world.waitForJob(jobId, (row) => row.status === 'completed');
  }

  it('accepts a full backup of a two-disk VM: 202, queued at once with both disks and no parent', async () => {
    const vmName = await registerVm(suite.hub, ['disk-0', 'disk-1']);
    const res = await suite.hub.call<Accepted>('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'full',
    });
    expect(res.status).toBe(202);
    const backupId = res.body.backup_id as string;
    expect(backupId).toMatch(new RegExp(`^backup-${uuid}$`));
    expect(res.body).toEqual({
      backup_id: backupId,
      job_type: 'backup',
      status: 'queued',
      backup_type: 'full',
      parent_backup_id: null,
      disks: ['disk-0', 'disk-1'].map((disk_key) => ({
        disk_key,
        previous_change_id: null,
        target_path: `/srv/tidemark/${vmName}/${backupId}/${disk_key}.qcow2`,
        backing_path: null,
        full_reason: null,
      })),
    });

    const t0 = Date.now();
    const job = await suite.hub.call('GET', `/api/v1/backups/${backupId}`);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(job.status).toBe(200);
    expect(job.body).toMatchObject({
      backup_id: backupId,
      job_type: 'backup',
      vm_name: vmName,
      backup_type: 'full',
      repository_id: suite.repo.id,
      policy_id: null,
      parent_backup_id: null,
      status: 'queued',
      change_id: null,
      progress: null,
      disks: [
        { disk_key: 'disk-0', change_id: null, previous_change_id: null, backing_path: null },
        { disk_key: 'disk-1', change_id: null, previous_change_id: null, backing_path: null },
      ],
    });

    // backup.start went out after the row existed, with the job id as event id and Nats-Msg-Id.
    const start = await lastStart(suite.world);
    expect(start.msgId).toBe(backupId);
    expect(start.event).toMatchObject({ id: backupId, jobId: backupId, jobType: 'backup' });
    expect(start.event.data.disks.map((d) => d.source)).toEqual([
      `/var/lib/vms/${vmName}/disk-0.qcow2`,
      `/var/lib/vms/${vmName}/disk-1.qcow2`,
    ]);
    await suite.world.drained();
    expect(await suite.world.deadLetters()).toEqual([]);
  });

  it("plans an incremental on the completed full: each disk's change_id, the parent, backed by its files", async () => {
    const vmName = await registerVm(suite.hub, ['disk-0', 'disk-1']);
    const full = await suite.hub.call<Accepted>('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'full',
    });
    const fullId = full.body.backup_id as string;
    await complete(fullId, 'backup', ['uuid-a/1', 'uuid-b/1']);

    const incr = await suite.hub.call<Accepted>('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'incremental',
    });
    expect(incr.status).toBe(202);
    const incrId = incr.body.backup_id as string;
    expect(incr.body).toMatchObject({ backup_type: 'incremental', parent_backup_id: fullId });

    const { event } = await lastStart(suite.world);
    expect(event.jobId).toBe(incrId);
    expect(event.data).toEqual({
      vmName,
      backupType: 'incremental',
      repositoryId: suite.repo.id,
      repositoryPath: '/srv/tidemark',
      policyId: null,
      parentJobId: fullId,
      ifChangeIdUnusable: 'fail',
      disks: [
        {
          diskKey: 'disk-0',
          source: `/var/lib/vms/${vmName}/disk-0.qcow2`,
          previousChangeId: 'uuid-a/1',
          targetPath: `/srv/tidemark/${vmName}/${incrId}/disk-0.qcow2`,
          backingPath: `/srv/tidemark/${vmName}/${fullId}/disk-0.qcow2`,
          fullReason: null,
          chainHeads: [{ jobType: 'backup', repositoryId: suite.repo.id, changeId: 'uuid-a/1' }],
        },
        {
          diskKey: 'disk-1',
          source: `/var/lib/vms/${vmName}/disk-1.qcow2`,
          previousChangeId: 'uuid-b/1',
          targetPath: `/srv/tidemark/${vmName}/${incrId}/disk-1.qcow2`,
          backingPath: `/srv/tidemark/${vmName}/${fullId}/disk-1.qcow2`,
          fullReason: null,
          chainHeads: [{ jobType: 'backup', repositoryId: suite.repo.id, changeId: 'uuid-b/1' }],
        },
      ],
    });
    const row = await suite.world.job(incrId);
    expect(row).toMatchObject({ parent_backup_id: fullId, backup_type: 'incremental' });

    // The incremental is still queued: a second backup of the VM is refused, and not published.
    const before = await streamCount(suite.world);
    const second = await suite.hub.call('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'auto',
    });
    expect(second.status).toBe(409);
    expect(second.body).toEqual({
      error: `VM ${vmName} already has an active backup job ${incrId}`,
      details: [{ path: 'body.vm_name', message: expect.any(String) }],
    });
    expect(await streamCount(suite.world)).toBe(before);
    expect(
      await suite.world.count('SELECT COUNT(*) FROM backup_jobs WHERE vm_name = ?', [vmName]),
    ).toBe(2);
  });

  it('refuses an incremental without a completed chain head (409); "auto" then means full', async () => {
    const vmName = await registerVm(suite.hub, ['disk-0']);
    const before = await streamCount(suite.world);
    const incr = await suite.hub.call('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'incremental',
    });
    expect(incr.status).toBe(409);
    expect(incr.body).toEqual({
      error: `no incremental backup possible: VM ${vmName} has no completed backup`,
      details: [{ path: 'body.backup_type', message: expect.stringContaining('ask for a full') }],
    });
    expect(await streamCount(suite.world)).toBe(before);
    expect(
      await suite.world.count('SELECT COUNT(*) FROM backup_jobs WHERE vm_name = ?', [vmName]),
    ).toBe(0);

    const auto = await suite.hub.call<Accepted>('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'auto',
    });
    expect(auto.status).toBe(202);
    expect(auto.body).toMatchObject({ backup_type: 'full', parent_backup_id: null });
  });

  it('answers 404 for an unknown VM, repository or policy, naming the field; nothing is published', async () => {
    const vmName = await registerVm(suite.hub);
    const before = await streamCount(suite.world);
    const cases: [Record<string, unknown>, string][] = [
      [{ vm_name: uniqueName('ghost'), repository_id: suite.repo.id }, 'body.vm_name'],
      [{ vm_name: vmName, repository_id: 'repo-nope' }, 'body.repository_id'],
      [
        { vm_name: vmName, repository_id: suite.repo.id, policy_id: 'policy-nope' },
        'body.policy_id',
      ],
    ];
    for (const [body, path] of cases) {
      const res = await suite.hub.call('POST', '/api/v1/backups', { ...body, backup_type: 'full' });
      expect(res.status).toBe(404);
      expect(res.body).toMatchObject({ details: [{ path }] });
    }
    expect(await streamCount(suite.world)).toBe(before);
    expect(
      await suite.world.count('SELECT COUNT(*) FROM backup_jobs WHERE vm_name = ?', [vmName]),
    ).toBe(0);
  });

  it('records a policy, and lists backup jobs by VM and status, newest first', async () => {
    const policy = await suite.hub.call<{ id: string }>('POST', '/api/v1/policies', {
      name: uniqueName('nightly'),
      schedule: '0 2 * * *',
      retention_count: 7,
    });
    expect(policy.status).toBe(201);
    const vmName = await registerVm(suite.hub);
    const first = await suite.hub.call<Accepted>('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'full',
      policy_id: policy.body.id,
    });
    const firstId = first.body.backup_id as string;
    await complete(firstId, 'backup', ['uuid-p/1']);
    const second = await suite.hub.call<Accepted>('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'auto',
    });
    // A replication of the same VM may run beside its backup; it is not listed with backups.
    const replication = await suite.hub.call('POST', '/api/v1/replications', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'full',
    });
    expect(replication.status).toBe(202);

    const all = await suite.hub.call<{
      backups: { backup_id: string; policy_id: string | null }[];
    }>('GET', `/api/v1/backups?vm_name=${vmName}`);
    expect(all.status).toBe(200);
    expect(all.body.backups.map((b) => b.backup_id)).toEqual([second.body.backup_id, firstId]);
    expect(all.body.backups[1].policy_id).toBe(policy.body.id);
    const done = await suite.hub.call<{ backups: { backup_id: string; change_id: string }[] }>(
      'GET',
      `/api/v1/backups?vm_name=${vmName}&status=completed&limit=5`,
    );
    expect(done.body.backups).toEqual([
      expect.objectContaining({ backup_id: firstId, change_id: 'uuid-p/1' }),
    ]);
  });

  it('replicates into one replica per disk: full, then incremental from its change_ids, never backed', async () => {
    const vmName = await registerVm(suite.hub, ['disk-0', 'disk-1']);
    const full = await suite.hub.call<Accepted>('POST', '/api/v1/replications', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'auto',
    });
    expect(full.status).toBe(202);
    const fullId = full.body.job_id as string;
    expect(fullId).toMatch(new RegExp(`^replication-${uuid}$`));
    const replicas = ['disk-0', 'disk-1'].map((d) => `/srv/tidemark/${vmName}/replica/${d}.qcow2`);
    expect(full.body).toMatchObject({
      job_type: 'replication',
      status: 'queued',
      backup_type: 'full',
      parent_backup_id: null,
    });
    expect(full.body.disks.map((d) => d.target_path)).toEqual(replicas);
    await complete(fullId, 'replication', ['uuid-r0/4', 'uuid-r1/4']);

    const incr = await suite.hub.call<Accepted>('POST', '/api/v1/replications', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'incremental',
    });
    expect(incr.status).toBe(202);
    expect(incr.body).toMatchObject({
      backup_type: 'incremental',
      parent_backup_id: fullId,
      disks: [
        {
          disk_key: 'disk-0',
          previous_change_id: 'uuid-r0/4',
          target_path: replicas[0],
          backing_path: null,
        },
        {
          disk_key: 'disk-1',
          previous_change_id: 'uuid-r1/4',
          target_path: replicas[1],
          backing_path: null,
        },
      ],
    });
    const { event } = await lastStart(suite.world);
    expect(event).toMatchObject({ jobId: incr.body.job_id, jobType: 'replication' });

    const got = await suite.hub.call('GET', `/api/v1/replications/${incr.body.job_id}`);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({
      job_id: incr.body.job_id,
      job_type: 'replication',
      status: 'queued',
    });
  });

  it('answers 404 for an unknown job, naming the path parameter', async () => {
    const res = await suite.hub.call('GET', '/api/v1/backups/backup-nope');
    expect(res.status).toBe(404);
    expect(res.body).toEqual({
      error: 'job backup-nope does not exist',
      details: [{ path: 'params.backup_id', message: 'not found' }],
    });
    const rep = await suite.hub.call('GET', '/api/v1/replications/replication-nope');
    expect(rep.body).toMatchObject({ details: [{ path: 'params.job_id' }] });
  });
});
