import type { JobType } from '@tidemark/shared';
import { uniqueName } from '../support/env';
import {
  completedData,
  createLedgerWorld,
  seedReferences,
  startData,
  type LedgerWorld,
} from '../support/ledger-harness';

// The original system's own check: the change_id VMware hands out, and a 102 GB transfer.
const VMWARE_CHANGE_ID = '52 66 8c 2d a7 c5 c5 68-c5 d2 8d 04 79 f5 fd 7d/9999';

describe('ledger: events against real NATS and MariaDB', () => {
  let world: LedgerWorld;
  let refs: { repositoryId: string; policyId: string };

  beforeEach(async () => {
    world = await createLedgerWorld();
    await world.startLedger();
    refs = await seedReferences(world);
  });
  afterEach(() => world.close());

  it.each<JobType>(['backup', 'replication'])(
    'records the change_id, status and bytes of a running %s job through the same path',
    async (jobType) => {
      const jobId = uniqueName(`${jobType}-`);
      const vm = uniqueName('vm');
      await world.publish('backup.start', jobId, startData(refs.repositoryId, vm), { jobType });
      await world.publish(
        'backup.progress',
        jobId,
        {
          phase: 'copying',
          sequence: 1,
          bytesPerSecond: 1e9,
          disks: [{ diskKey: 'disk-2000', bytesDone: 1, bytesTotal: 102000000000 }],
        },
        { jobType },
      );
      await world.waitForJob(jobId, (r) => r.status === 'running');
      await world.publish(
        'backup.completed',
        jobId,
        completedData(refs.repositoryId, vm, [
          { diskKey: 'disk-2000', changeId: VMWARE_CHANGE_ID, bytesTransferred: 102000000000 },
        ]),
        { jobType },
      );
      const row = await world.waitForJob(jobId, (r) => r.status === 'completed');
      expect(row).toMatchObject({
        job_type: jobType,
        change_id: VMWARE_CHANGE_ID,
        bytes_transferred: '102000000000',
      });
      const [disk] = await world.rows('SELECT * FROM backup_disks WHERE job_id = ?', [jobId]);
      expect(disk).toMatchObject({
        disk_key: 'disk-2000',
        change_id: VMWARE_CHANGE_ID,
        bytes_transferred: '102000000000',
      });
    },
  );

  it('creates the queued job and its disks from backup.start, with NULL for absent references', async () => {
    const jobId = uniqueName('backup-');
    const vm = uniqueName('vm');
    await world.publish(
      'backup.start',
      jobId,
      startData(refs.repositoryId, vm, ['disk-a', 'disk-b']),
    );
    const row = await world.waitForJob(jobId, (r) => r.status === 'queued');
    expect(row).toMatchObject({
      vm_name: vm,
      backup_type: 'full',
      repository_id: refs.repositoryId,
      policy_id: null,
      parent_backup_id: null,
    });
    const disks = await world.rows(
      'SELECT disk_key, change_id FROM backup_disks WHERE job_id = ? ORDER BY position',
      [jobId],
    );
    expect(disks).toEqual([
      { disk_key: 'disk-a', change_id: null },
      { disk_key: 'disk-b', change_id: null },
    ]);
  });

  it('records a policy and a parent job when the start names them', async () => {
    const vm = uniqueName('vm');
    const parent = uniqueName('backup-');
    await world.publish('backup.start', parent, startData(refs.repositoryId, vm));
    await world.publish(
      'backup.completed',
      parent,
      completedData(refs.repositoryId, vm, [
        { diskKey: 'disk-2000', changeId: 'u/1', bytesTransferred: 10 },
      ]),
    );
    await world.waitForJob(parent, (r) => r.status === 'completed');
    const child = uniqueName('backup-');
    await world.publish(
      'backup.start',
      child,
      startData(refs.repositoryId, vm, ['disk-2000'], {
        backupType: 'incremental',
        parentJobId: parent,
        policyId: refs.policyId,
      }),
    );
    expect(await world.waitForJob(child, (r) => r.status === 'queued')).toMatchObject({
      parent_backup_id: parent,
      policy_id: refs.policyId,
    });
  });

  it.each([
    [
      'repository',
      { repositoryId: 'repo-missing' },
      'repository repo-missing does not exist',
      'data.repositoryId',
    ],
    [
      'policy',
      { policyId: 'policy-missing' },
      'policy policy-missing does not exist',
      'data.policyId',
    ],
  ])(
    'dead-letters a start naming an unknown %s and writes no row',
    async (_what, override, reason, path) => {
      const jobId = uniqueName('backup-');
      const data = { ...startData(refs.repositoryId, uniqueName('vm')), ...override };
      await world.publish('backup.start', jobId, data);
      const [letter] = await world.waitForDeadLetters(1);
      expect(letter.reason).toBe(reason);
      expect(letter.issues).toEqual([{ path, message: reason }]);
      expect(JSON.parse(letter.payload)).toMatchObject({ jobId, data: override });
      await world.drained();
      expect(await world.job(jobId)).toBeUndefined();
      expect(await world.rows('SELECT * FROM backup_disks WHERE job_id = ?', [jobId])).toEqual([]);
    },
  );

  it('records a different change_id for each disk of a two-disk job', async () => {
    const jobId = uniqueName('backup-');
    const vm = uniqueName('vm');
    await world.publish(
      'backup.start',
      jobId,
      startData(refs.repositoryId, vm, ['disk-2000', 'disk-2001']),
    );
    await world.publish(
      'backup.completed',
      jobId,
      completedData(refs.repositoryId, vm, [
        { diskKey: 'disk-2000', changeId: 'aaaa/17', bytesTransferred: 100 },
        { diskKey: 'disk-2001', changeId: 'bbbb/4', bytesTransferred: 200 },
      ]),
    );
    await world.waitForJob(jobId, (r) => r.status === 'completed');
    const disks = await world.rows(
      'SELECT disk_key, change_id, bytes_transferred FROM backup_disks WHERE job_id = ? ORDER BY disk_key',
      [jobId],
    );
    expect(disks).toEqual([
      { disk_key: 'disk-2000', change_id: 'aaaa/17', bytes_transferred: '100' },
      { disk_key: 'disk-2001', change_id: 'bbbb/4', bytes_transferred: '200' },
    ]);
  });

  it('applies a completed event delivered three times exactly once', async () => {
    const jobId = uniqueName('backup-');
    const vm = uniqueName('vm');
    await world.publish('backup.start', jobId, startData(refs.repositoryId, vm));
    await world.waitForJob(jobId, (r) => r.status === 'queued');
    const event = await world.publish(
      'backup.completed',
      jobId,
      completedData(refs.repositoryId, vm, [
        { diskKey: 'disk-2000', changeId: 'u/1', bytesTransferred: 7 },
      ]),
    );
    const first = await world.waitForJob(jobId, (r) => r.status === 'completed');
    // Two more copies of the very same event, each stored by JetStream (no Nats-Msg-Id), so
    // the ledger really receives it three times.
    for (let i = 0; i < 2; i++)
      await world.js.publish(world.topo.subjectFor('backup.completed'), JSON.stringify(event));
    // ...and a second, different completion of the same job: it changes nothing, and is kept
    // as a dead letter rather than swallowed.
    await world.publish(
      'backup.completed',
      jobId,
      completedData(refs.repositoryId, vm, [
        { diskKey: 'disk-2000', changeId: 'u/2', bytesTransferred: 9 },
      ]),
    );
    await world.drained();
    const after = await world.job(jobId);
    expect(after).toMatchObject({
      change_id: 'u/1',
      bytes_transferred: '7',
      updated_at: first.updated_at,
      completed_at: first.completed_at,
    });
    const processed = await world.rows('SELECT event_id FROM processed_events WHERE event_id = ?', [
      event.id,
    ]);
    expect(processed).toHaveLength(1);
    const letters = await world.deadLetters();
    expect(letters.map((l) => l.reason)).toEqual([
      `job ${jobId} already completed with change_id disk-2000=u/1; this completion reports disk-2000=u/2`,
    ]);
  });

  it('records everything from a completed event that arrives before its start', async () => {
    const jobId = uniqueName('replication-');
    const vm = uniqueName('vm');
    await world.publish(
      'backup.completed',
      jobId,
      completedData(
        refs.repositoryId,
        vm,
        [
          {
            diskKey: 'disk-2000',
            changeId: 'early/3',
            bytesTransferred: 42,
            targetPath: '/r/x.qcow2',
          },
        ],
        { policyId: refs.policyId },
      ),
      { jobType: 'replication' },
    );
    await world.waitForJob(jobId, (r) => r.status === 'completed');
    await world.publish(
      'backup.start',
      jobId,
      { ...startData(refs.repositoryId, vm), policyId: refs.policyId },
      { jobType: 'replication' },
    );
    await world.drained();
    expect(await world.job(jobId)).toMatchObject({
      status: 'completed',
      job_type: 'replication',
      change_id: 'early/3',
      policy_id: refs.policyId,
    });
    const [disk] = await world.rows('SELECT * FROM backup_disks WHERE job_id = ?', [jobId]);
    expect(disk).toMatchObject({
      change_id: 'early/3',
      source: `/var/lib/vms/${vm}/disk-2000.qcow2`,
      target_path: '/r/x.qcow2',
    });
  });

  it('ignores progress after completion and progress older than the last applied', async () => {
    const jobId = uniqueName('backup-');
    const vm = uniqueName('vm');
    const progress = (sequence: number, bytesDone: number) => ({
      phase: 'copying' as const,
      sequence,
      bytesPerSecond: 5,
      disks: [{ diskKey: 'disk-2000', bytesDone, bytesTotal: 1000 }],
    });
    await world.publish('backup.start', jobId, startData(refs.repositoryId, vm));
    await world.publish('backup.progress', jobId, progress(5, 500));
    await world.publish('backup.progress', jobId, progress(3, 300));
    await world.drained();
    expect(await world.job(jobId)).toMatchObject({
      status: 'running',
      progress_sequence: '5',
      progress_bytes_done: '500',
    });
    await world.publish(
      'backup.completed',
      jobId,
      completedData(refs.repositoryId, vm, [
        { diskKey: 'disk-2000', changeId: 'u/1', bytesTransferred: 1000 },
      ]),
    );
    await world.waitForJob(jobId, (r) => r.status === 'completed');
    await world.publish('backup.progress', jobId, progress(9, 900));
    await world.drained();
    expect(await world.job(jobId)).toMatchObject({
      status: 'completed',
      progress_sequence: '5',
      progress_bytes_done: '500',
    });
  });

  it('refuses a second active job for one VM (dead letter), and allows it once the first ended', async () => {
    const vm = uniqueName('vm');
    const first = uniqueName('backup-');
    const second = uniqueName('backup-');
    await world.publish('backup.start', first, startData(refs.repositoryId, vm));
    await world.publish('backup.start', second, startData(refs.repositoryId, vm));
    const [letter] = await world.waitForDeadLetters(1);
    expect(letter.reason).toBe(`VM ${vm} already has an active backup job ${first}`);
    expect(await world.job(second)).toBeUndefined();
    // A replication of the same VM is another job type: allowed alongside.
    const repl = uniqueName('replication-');
    await world.publish('backup.start', repl, startData(refs.repositoryId, vm), {
      jobType: 'replication',
    });
    await world.waitForJob(repl, (r) => r.status === 'queued');
    await world.publish('backup.failed', first, {
      code: 'COPY_FAILED',
      message: 'boom',
      retryable: true,
    });
    await world.waitForJob(first, (r) => r.status === 'failed');
    const third = uniqueName('backup-');
    await world.publish('backup.start', third, startData(refs.repositoryId, vm));
    await world.waitForJob(third, (r) => r.status === 'queued');
  });

  it('dead-letters malformed input with the field and reason, and goes on with the next event', async () => {
    const subject = world.topo.subjectFor('backup.completed');
    const valid = await world.publish(
      'backup.start',
      'backup-ok-1',
      startData(refs.repositoryId, uniqueName('vm')),
    );
    const base = { ...valid, id: 'x' };
    await world.js.publish(subject, 'this is not json {');
    await world.js.publish(subject, JSON.stringify({ ...base, id: 'wrong-type', jobId: 12345 }));
    await world.js.publish(
      subject,
      JSON.stringify({ ...base, id: 'missing', data: { ...valid.data, vmName: undefined } }),
    );
    await world.js.publish(
      subject,
      JSON.stringify({ ...base, id: 'unknown-type', type: 'backup.teleported' }),
    );
    await world.js.publish(
      subject,
      JSON.stringify({
        ...base,
        id: 'oversized',
        data: { ...valid.data, note: 'x'.repeat(70 * 1024) },
      }),
    );
    const after = uniqueName('backup-');
    await world.publish('backup.start', after, startData(refs.repositoryId, uniqueName('vm')));
    await world.waitForJob(after, (r) => r.status === 'queued');

    const letters = await world.waitForDeadLetters(5);
    const byId = (id: string | null) =>
      letters.find((l) => l.eventId === id || (id === null && l.eventId === null));
    expect(letters.map((l) => l.reason)).toEqual([
      expect.stringContaining('not JSON'),
      expect.stringContaining('jobId'),
      expect.stringContaining('data.vmName'),
      expect.stringContaining('type'),
      'event too large',
    ]);
    expect(byId(null)?.payload).toBe('this is not json {');
    expect(letters[1].issues).toEqual([
      { path: 'jobId', message: expect.stringContaining('string') },
    ]);
    expect(letters[2].issues).toEqual([{ path: 'data.vmName', message: expect.any(String) }]);
    expect(letters[3].issues[0]).toEqual({
      path: 'type',
      message: 'unknown event type "backup.teleported"',
    });
    expect(letters[4]).toMatchObject({
      payloadTruncated: false,
      issues: [{ message: expect.stringContaining('limit is 65536') }],
    });
    expect(letters[4].payloadBytes).toBeGreaterThan(70 * 1024);
    for (const l of letters) expect(l.subject).toBe(subject);
  });

  it('dead-letters progress for a job that never started, after a bounded number of deliveries', async () => {
    const jobId = uniqueName('backup-');
    await world.publish('backup.progress', jobId, {
      phase: 'copying',
      sequence: 1,
      bytesPerSecond: 1,
      disks: [],
    });
    const [letter] = await world.waitForDeadLetters(1);
    expect(letter.reason).toMatch(
      new RegExp(`job ${jobId} is not known yet; gave up after 5 deliveries`),
    );
    expect(letter.deliveryCount).toBe(5);
  });
});
