/**
 * Rows written straight into a ledger world's database, in bulk: thousands of jobs in a second,
 * for suites about reading them back (paging, reply sizes), not about how they came to be.
 */
import type { LedgerWorld } from './ledger-harness';

export interface BulkDisk {
  diskKey: string;
  source: string;
  targetPath: string;
  backingPath?: string | null;
}

export interface BulkJob {
  id: string;
  jobType: 'backup' | 'replication';
  vmName: string;
  repositoryId: string;
  /** Ended jobs only: any number of them may share a VM. */
  status: 'completed' | 'failed' | 'cancelled';
  createdAt: Date;
  disks: BulkDisk[];
}

/** Inserts the jobs and their disks, `chunk` rows to a statement. */
export async function insertJobs(world: LedgerWorld, jobs: BulkJob[], chunk = 500): Promise<void> {
  let seq = await world.count('SELECT COALESCE(MAX(completion_seq), 0) FROM backup_jobs');
  for (let at = 0; at < jobs.length; at += chunk) {
    const part = jobs.slice(at, at + chunk);
    const jobRows = part.map((j) => [
      j.id,
      j.jobType,
      j.vmName,
      'full',
      j.repositoryId,
      j.status,
      j.status === 'completed' ? null : j.status === 'failed' ? 'CLIENT_FAILED' : 'CANCELLED',
      j.createdAt,
      j.createdAt,
      j.createdAt,
      j.createdAt,
      j.status === 'completed' ? ++seq : null,
    ]);
    await world.db.query(
      `INSERT INTO backup_jobs (id, job_type, vm_name, backup_type, repository_id, status,
        error_code, created_at, started_at, completed_at, updated_at, completion_seq) VALUES ?`,
      [jobRows],
    );
    const diskRows = part.flatMap((j) =>
      j.disks.map((d, position) => [
        j.id,
        d.diskKey,
        position,
        d.source,
        d.targetPath,
        d.backingPath ?? null,
      ]),
    );
    if (diskRows.length === 0) continue;
    await world.db.query(
      `INSERT INTO backup_disks (job_id, disk_key, position, source, target_path, backing_path)
       VALUES ?`,
      [diskRows],
    );
  }
}

/** Registers VMs with one disk each. */
export async function insertVms(
  world: LedgerWorld,
  vms: { vmName: string; createdAt: Date }[],
): Promise<void> {
  if (vms.length === 0) return;
  await world.db.query('INSERT INTO vm_contexts (vm_name, created_at) VALUES ?', [
    vms.map((v) => [v.vmName, v.createdAt]),
  ]);
  await world.db.query(
    'INSERT INTO vm_disks (vm_name, disk_key, driver, path, position) VALUES ?',
    [vms.map((v) => [v.vmName, 'disk-0', 'qemu', `/var/lib/vms/${v.vmName}/disk-0.qcow2`, 0])],
  );
}

/** Creates repositories and policies named `<prefix><i>`, each with the given created_at. */
export async function insertRegistry(
  world: LedgerWorld,
  table: 'backup_repositories' | 'backup_policies',
  rows: { id: string; name: string; createdAt: Date }[],
): Promise<void> {
  if (rows.length === 0) return;
  if (table === 'backup_repositories') {
    await world.db.query('INSERT INTO backup_repositories (id, name, path, created_at) VALUES ?', [
      rows.map((r) => [r.id, r.name, `/srv/tidemark/${r.name}`, r.createdAt]),
    ]);
  } else {
    await world.db.query(
      'INSERT INTO backup_policies (id, name, schedule, retention_count, created_at) VALUES ?',
      [rows.map((r) => [r.id, r.name, null, null, r.createdAt])],
    );
  }
}
