import type { AcceptedReplication, Job, JobDisk } from './api';
import { acceptedView, jobView, outcomeView, progressLine, vmTable } from './views';

const GiB = 2 ** 30;

function disk(diskKey: string, changeId: string | null, bytes: number | null = null): JobDisk {
  return {
    disk_key: diskKey,
    change_id: changeId,
    previous_change_id: null,
    bytes_transferred: bytes,
    bytes_total: 4 * GiB,
    target_path: `/srv/repo/pg01/${diskKey}.qcow2`,
    backing_path: null,
    full_reason: null,
    canary: null,
    change_tracking: null,
  };
}

function job(overrides: Partial<Job>): Job {
  return {
    backup_id: 'backup-1',
    job_type: 'backup',
    vm_name: 'pg01',
    backup_type: 'full',
    repository_id: 'repo-1',
    policy_id: null,
    parent_backup_id: null,
    status: 'running',
    change_id: null,
    bytes_transferred: null,
    error_code: null,
    error_message: null,
    retryable: null,
    progress: null,
    created_at: '2025-01-01T00:00:00.000Z',
    started_at: '2025-01-01T00:00:01.000Z',
    completed_at: null,
    disks: [disk('disk-0', null), disk('disk-1', null)],
    ...overrides,
  } as Job;
}

describe('views', () => {
  it('starts the accepted job view with "<job_type> <id> queued", then the planned disks', () => {
    const accepted: AcceptedReplication = {
      job_id: 'repl-7',
      job_type: 'replication',
      status: 'queued',
      backup_type: 'incremental',
      parent_backup_id: 'backup-6',
      disks: [
        {
          disk_key: 'disk-0',
          previous_change_id: '52 aa/16',
          target_path: '/srv/repo/pg01/disk-0.qcow2',
          backing_path: '/srv/repo/pg01/prev.qcow2',
          full_reason: null,
        },
      ],
    };
    expect(acceptedView(accepted, 'pg01').split('\n')).toEqual([
      'replication repl-7 queued: incremental replication of pg01 (parent backup-6)',
      'DISK    PREVIOUS_CHANGE_ID  TARGET',
      'disk-0  52 aa/16            /srv/repo/pg01/disk-0.qcow2',
    ]);
  });

  it('shows the per-disk change_ids of a completed job', () => {
    const completed = job({
      status: 'completed',
      bytes_transferred: 3 * GiB,
      completed_at: '2025-01-01T00:03:03.000Z',
      disks: [disk('disk-0', '52 aa/17', GiB), disk('disk-1', '52 bb/3', 2 * GiB)],
    });
    expect(outcomeView(completed).split('\n')).toEqual([
      'backup backup-1 completed: 3.0 GiB transferred in 3m 02s',
      'DISK    CHANGE_ID  TRANSFERRED',
      'disk-0  52 aa/17   1.0 GiB',
      'disk-1  52 bb/3    2.0 GiB',
    ]);
  });

  it('says which disk of an incremental was copied in full, and why', () => {
    const completed = job({
      status: 'completed',
      backup_type: 'incremental',
      bytes_transferred: 3 * GiB,
      completed_at: '2025-01-01T00:03:03.000Z',
      disks: [
        disk('disk-0', '52 aa/18', GiB),
        { ...disk('disk-1', '52 bb/4', 2 * GiB), full_reason: 'the bitmap is not on the source' },
      ],
    });
    expect(outcomeView(completed).split('\n').slice(-1)).toEqual([
      'disk-1 copied in full: the bitmap is not on the source',
    ]);
    expect(jobView(completed)).toContain('disk-1 copied in full: the bitmap is not on the source');
  });

  it('warns of a disk whose change tracking the canary caught missing writes', () => {
    const completed = job({
      status: 'completed',
      completed_at: '2025-01-01T00:03:03.000Z',
      disks: [
        {
          ...disk('disk-0', '52 aa/18', GiB),
          canary: { sampled_bytes: 4 * 2 ** 20, mismatched_bytes: 2 ** 17 },
          change_tracking: 'untrusted',
        },
      ],
    });
    expect(outcomeView(completed)).toContain(
      'disk-0 change tracking untrusted: 128.0 KiB of 4.0 MiB sampled unchanged blocks differ; its next job copies it in full',
    );
  });

  it('gives the error of a failed job, and the change_ids of the disks that did finish', () => {
    const failed = job({
      status: 'failed',
      error_code: 'CLIENT_EXITED',
      error_message: 'qemu-img exited with 1',
      retryable: true,
      disks: [disk('disk-0', '52 aa/17', GiB), disk('disk-1', null)],
    });
    expect(outcomeView(failed).split('\n')).toEqual([
      'backup backup-1 failed: CLIENT_EXITED: qemu-img exited with 1 (retryable)',
      'DISK    CHANGE_ID  TRANSFERRED',
      'disk-0  52 aa/17   1.0 GiB',
      'disk-1  -          -',
    ]);
    expect(outcomeView(job({ status: 'cancelled' }))).toBe(
      'backup backup-1 cancelled: no reason given',
    );
  });

  it('shows progress only while the job runs', () => {
    const progress = {
      phase: 'copying',
      sequence: 3,
      bytes_done: GiB,
      bytes_total: 0,
      bytes_per_second: 0,
    };
    expect(progressLine(job({ progress }))).toBe('backup-1 running copying 1.0 GiB 0 B/s ETA -');
    expect(progressLine(job({ status: 'completed', progress }))).toBe('backup-1 completed');
    expect(jobView(job({ status: 'completed', progress }))).not.toContain('copying');
  });

  it('shows a job in full: fields, then a row per disk', () => {
    const text = jobView(job({ error_code: null }));
    expect(text).toContain('backup       backup-1\nstatus       running\nvm           pg01');
    expect(text).toContain('progress     -');
    expect(text).toMatch(/^DISK +CHANGE_ID +PREVIOUS_CHANGE_ID +TRANSFERRED +SIZE +TARGET$/m);
    expect(text).toMatch(/^disk-1 +- +- +- +4\.0 GiB +\/srv\/repo\/pg01\/disk-1\.qcow2$/m);
  });

  it('says so when a list is empty', () => {
    expect(vmTable([])).toBe('no VMs registered');
  });
});
