import { registerVm, streamCount, hubSuite } from '../support/hub-harness';

describe('hub: cancelling a job', () => {
  const suite = hubSuite('/srv/cancel');

  async function start(
    jobType: 'backup' | 'replication',
    vmName?: string,
  ): Promise<{ jobId: string; vmName: string }> {
    const vm = vmName ?? (await registerVm(suite.hub, ['disk-0']));
    const res = await suite.hub.call<{ backup_id?: string; job_id?: string }>(
      'POST',
      jobType === 'backup' ? '/api/v1/backups' : '/api/v1/replications',
      { vm_name: vm, repository_id: suite.repo.id, backup_type: 'full' },
    );
    expect(res.status).toBe(202);
    return { jobId: (res.body.backup_id ?? res.body.job_id) as string, vmName: vm };
  }

  it('cancels a queued backup with a reason: 202, the job reads cancelled, the VM can back up again', async () => {
    const { jobId, vmName } = await start('backup');
    const res = await suite.hub.call('POST', `/api/v1/backups/${jobId}/cancel`, {
      reason: 'maintenance window closed',
    });
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ job_id: jobId, job_type: 'backup', event_id: expect.any(String) });

    await suite.world.waitForJob(jobId, (r) => r.status === 'cancelled', 5000);
    const got = await suite.hub.call<Record<string, unknown>>('GET', `/api/v1/backups/${jobId}`);
    expect(got.body).toMatchObject({
      status: 'cancelled',
      error_code: 'CANCELLED',
      error_message: 'maintenance window closed',
      retryable: false,
    });
    // No longer active: the next backup of the VM is accepted.
    await start('backup', vmName);
    expect(await suite.world.deadLetters()).toEqual([]);
  });

  it('cancels a replication through its own route without a body', async () => {
    const { jobId } = await start('replication');
    const res = await suite.hub.call('POST', `/api/v1/replications/${jobId}/cancel`);
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ job_type: 'replication' });
    const row = await suite.world.waitForJob(jobId, (r) => r.status === 'cancelled', 5000);
    expect(row).toMatchObject({ error_code: 'CANCELLED', error_message: 'cancelled on request' });
  });

  it('still records the change_id of a copy that finished after the cancel', async () => {
    const { jobId } = await start('backup');
    expect((await suite.hub.call('POST', `/api/v1/backups/${jobId}/cancel`)).status).toBe(202);
    await suite.world.waitForJob(jobId, (r) => r.status === 'cancelled', 5000);
    const done = await suite.hub.call('POST', `/api/v1/backups/${jobId}/complete`, {
      change_id: 'uuid-c/4',
      bytes_transferred: 512,
    });
    expect(done.status).toBe(202);
    const row = await suite.world.waitForJob(jobId, (r) => r.status === 'completed', 5000);
    expect(row).toMatchObject({ change_id: 'uuid-c/4', error_code: null });
    expect(await suite.world.deadLetters()).toEqual([]);
  });

  it('refuses an ended job (409 naming its status), an unknown job (404) and a bad reason (400); nothing is published', async () => {
    const { jobId } = await start('backup');
    await suite.hub.call('POST', `/api/v1/backups/${jobId}/cancel`);
    await suite.world.waitForJob(jobId, (r) => r.status === 'cancelled', 5000);
    const before = await streamCount(suite.world);

    const again = await suite.hub.call('POST', `/api/v1/backups/${jobId}/cancel`);
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({
      error: expect.stringContaining('already ended as cancelled'),
      details: [{ path: 'params.backup_id' }],
    });

    const unknown = await suite.hub.call('POST', '/api/v1/replications/replication-nope/cancel');
    expect(unknown.status).toBe(404);
    expect(unknown.body).toMatchObject({ details: [{ path: 'params.job_id' }] });

    const bad = await suite.hub.call('POST', `/api/v1/backups/${jobId}/cancel`, { reason: 7 });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ details: [{ path: 'body.reason' }] });
    const extra = await suite.hub.call('POST', `/api/v1/backups/${jobId}/cancel`, { force: true });
    expect(extra.status).toBe(400);

    expect(await streamCount(suite.world)).toBe(before);
  });
});
