import { randomUUID } from 'node:crypto';
import { uniqueName } from '../support/env';
import { registerVm, streamCount, hubSuite } from '../support/hub-harness';
import { startData } from '../support/ledger-harness';

type Route = 'complete' | 'changeid';

// The old system lost change_ids by choosing the completion endpoint from the job id's prefix.
// Here either route records the change_id of either job type, whatever the id looks like.
describe('hub: compatibility completion routes', () => {
  const suite = hubSuite('/srv/compat');

  function path(route: Route, jobId: string): string {
    return route === 'complete'
      ? `/api/v1/backups/${jobId}/complete`
      : `/api/v1/replications/${jobId}/changeid`;
  }

  /** A queued one-disk job of the given type, started through the suite.hub. */
  async function startThroughHub(jobType: 'backup' | 'replication'): Promise<string> {
    const vmName = await registerVm(suite.hub, ['disk-2000']);
    const res = await suite.hub.call<{ backup_id?: string; job_id?: string }>(
      'POST',
      jobType === 'backup' ? '/api/v1/backups' : '/api/v1/replications',
      { vm_name: vmName, repository_id: suite.repo.id, backup_type: 'full' },
    );
    expect(res.status).toBe(202);
    return (res.body.backup_id ?? res.body.job_id) as string;
  }

  /** A replication job whose id reads like a backup's, created by another planner. */
  async function replicationNamedLikeABackup(): Promise<string> {
    const jobId = `backup-${randomUUID()}`;
    await suite.world.ask('jobs.create', {
      jobId,
      jobType: 'replication',
      ...startData(suite.repo.id, uniqueName('vm')),
    });
    return jobId;
  }

  const cases: [string, Route, () => Promise<string>, 'backup' | 'replication'][] = [
    ['a backup job through /complete', 'complete', () => startThroughHub('backup'), 'backup'],
    [
      'a replication job through /complete',
      'complete',
      () => startThroughHub('replication'),
      'replication',
    ],
    ['a backup job through /changeid', 'changeid', () => startThroughHub('backup'), 'backup'],
    [
      'a replication job named "backup-…" through /changeid',
      'changeid',
      replicationNamedLikeABackup,
      'replication',
    ],
    [
      'a replication job named "backup-…" through /complete',
      'complete',
      replicationNamedLikeABackup,
      'replication',
    ],
  ];

  it.each(cases)('records the change_id of %s', async (_name, route, makeJob, jobType) => {
    const jobId = await makeJob();
    const changeId = `52 66 8c 2d a7 c5 c5 68-c5 d2 8d 04 79 f5 fd 7d/${Math.floor(Math.random() * 1e6)}`;
    const res = await suite.hub.call('POST', path(route, jobId), {
      change_id: changeId,
      bytes_transferred: 4096,
    });
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ job_id: jobId, job_type: jobType, event_id: expect.any(String) });

    const row = await suite.world.waitForJob(jobId, (r) => r.status === 'completed');
    expect(row).toMatchObject({ job_type: jobType, change_id: changeId });
    expect(
      await suite.world.rows('SELECT change_id FROM backup_disks WHERE job_id = ?', [jobId]),
    ).toEqual([{ change_id: changeId }]);
    await suite.world.drained();
    expect(await suite.world.deadLetters()).toEqual([]);
  });

  it('takes /changeid without bytes_transferred, as old replication clients send it', async () => {
    const jobId = await startThroughHub('replication');
    const res = await suite.hub.call('POST', path('changeid', jobId), { change_id: 'uuid-x/9' });
    expect(res.status).toBe(202);
    await suite.world.waitForJob(jobId, (r) => r.change_id === 'uuid-x/9');
  });

  it('repeats a completion as 202, and refuses another change_id for a completed job (409)', async () => {
    const jobId = await startThroughHub('backup');
    const first = await suite.hub.call('POST', path('complete', jobId), {
      change_id: 'uuid-r/1',
      bytes_transferred: 8,
    });
    expect(first.status).toBe(202);
    await suite.world.waitForJob(jobId, (r) => r.status === 'completed');
    const again = await suite.hub.call('POST', path('complete', jobId), {
      change_id: 'uuid-r/1',
      bytes_transferred: 8,
    });
    expect(again.status).toBe(202);
    const other = await suite.hub.call('POST', path('changeid', jobId), { change_id: 'uuid-r/2' });
    expect(other.status).toBe(409);
    expect(other.body).toMatchObject({
      error: `job ${jobId} already completed with change_id uuid-r/1`,
      details: [{ path: 'body.change_id' }],
    });
    await suite.world.drained();
    expect(await suite.world.job(jobId)).toMatchObject({ change_id: 'uuid-r/1' });
  });

  it('refuses a job with several disks (409) and an unknown job (404); nothing is published', async () => {
    const vmName = await registerVm(suite.hub, ['disk-0', 'disk-1']);
    const started = await suite.hub.call<{ backup_id: string }>('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: suite.repo.id,
      backup_type: 'full',
    });
    const before = await streamCount(suite.world);
    const several = await suite.hub.call('POST', path('complete', started.body.backup_id), {
      change_id: 'uuid-y/1',
      bytes_transferred: 1,
    });
    expect(several.status).toBe(409);
    expect(several.body).toMatchObject({
      error: expect.stringContaining('has 2 disks'),
      details: [{ path: 'body.change_id' }],
    });

    const unknown = await suite.hub.call('POST', path('changeid', 'replication-nope'), {
      change_id: 'uuid-z/1',
    });
    expect(unknown.status).toBe(404);
    expect(unknown.body).toMatchObject({ details: [{ path: 'params.job_id' }] });
    expect(await streamCount(suite.world)).toBe(before);
  });
});
