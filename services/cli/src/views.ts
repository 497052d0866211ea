// What each command shows a person: pure renderings of the API's objects, built from format.ts.
import {
  jobIdOf,
  isFinished,
  type AcceptedBackup,
  type AcceptedReplication,
  type Job,
  type JobDisk,
  type Policy,
  type Repository,
  type Vm,
} from './api';
import {
  etaSeconds,
  formatBytes,
  formatDuration,
  formatFields,
  formatRate,
  formatTable,
  percent,
  secondsBetween,
} from './format';

const bytesOrDash = (n: number | null) => (n === null ? '-' : formatBytes(n));

export function vmAddedView(vm: Vm): string {
  return [
    `VM ${vm.vm_name} registered with ${vm.disks.length} disk${vm.disks.length === 1 ? '' : 's'}`,
    formatTable(
      ['DISK', 'DRIVER', 'PATH'],
      vm.disks.map((d) => [d.disk_key, d.driver, d.path]),
    ),
  ].join('\n');
}

export function vmTable(vms: Vm[]): string {
  if (vms.length === 0) return 'no VMs registered';
  return formatTable(
    ['VM', 'DISKS', 'CREATED'],
    vms.map((vm) => [vm.vm_name, vm.disks.map((d) => d.disk_key).join(','), vm.created_at]),
  );
}

export function repositoryTable(repositories: Repository[]): string {
  if (repositories.length === 0) return 'no repositories';
  return formatTable(
    ['ID', 'NAME', 'PATH', 'CREATED'],
    repositories.map((r) => [r.id, r.name, r.path, r.created_at]),
  );
}

export function policyTable(policies: Policy[]): string {
  if (policies.length === 0) return 'no policies';
  return formatTable(
    ['ID', 'NAME', 'SCHEDULE', 'RETENTION', 'CREATED'],
    policies.map((p) => [p.id, p.name, p.schedule, p.retention_count, p.created_at]),
  );
}

/**
 * The 202 answer. Its first line starts `<job_type> <id> queued` so scripts (and the tests) can
 * read the id before any progress follows.
 */
export function acceptedView(
  accepted: AcceptedBackup | AcceptedReplication,
  vmName: string,
): string {
  const parent = accepted.parent_backup_id ?? 'none';
  return [
    `${accepted.job_type} ${jobIdOf(accepted)} ${accepted.status}: ${accepted.backup_type} ${accepted.job_type} of ${vmName} (parent ${parent})`,
    formatTable(
      ['DISK', 'PREVIOUS_CHANGE_ID', 'TARGET'],
      accepted.disks.map((d) => [d.disk_key, d.previous_change_id, d.target_path]),
    ),
    ...fullCopyNotes(accepted.disks),
  ].join('\n');
}

/** `copying 1.0 GiB / 4.0 GiB (25%) 100.0 MiB/s ETA 30s`, or null before any progress. */
export function progressText(job: Job): string | null {
  const p = job.progress;
  if (!p) return null;
  const pct = percent(p.bytes_done, p.bytes_total);
  const amount =
    pct === null
      ? formatBytes(p.bytes_done)
      : `${formatBytes(p.bytes_done)} / ${formatBytes(p.bytes_total)} (${pct}%)`;
  const eta = formatDuration(etaSeconds(p.bytes_done, p.bytes_total, p.bytes_per_second));
  return `${p.phase} ${amount} ${formatRate(p.bytes_per_second)} ETA ${eta}`;
}

/** One plain line per change while following, for logs and pipes. */
export function progressLine(job: Job): string {
  const progress = isFinished(job.status) ? null : progressText(job);
  return [jobIdOf(job), job.status, progress].filter(Boolean).join(' ');
}

export function changeIdTable(disks: JobDisk[]): string {
  return [
    formatTable(
      ['DISK', 'CHANGE_ID', 'TRANSFERRED'],
      disks.map((d) => [d.disk_key, d.change_id, bytesOrDash(d.bytes_transferred)]),
    ),
    ...fullCopyNotes(disks),
  ].join('\n');
}

/**
 * One line per disk of an incremental that was (to be) copied in full, saying why, and per disk
 * whose change tracking the CBT canary caught missing writes.
 */
function fullCopyNotes(
  disks: Array<{
    disk_key: string;
    full_reason: string | null;
    canary?: { sampled_bytes: number; mismatched_bytes: number } | null;
    change_tracking?: 'trusted' | 'untrusted' | null;
  }>,
): string[] {
  return disks.flatMap((d) => [
    ...(d.full_reason === null ? [] : [`${d.disk_key} copied in full: ${d.full_reason}`]),
    ...(d.change_tracking === 'untrusted' && d.canary
      ? [
          `${d.disk_key} change tracking untrusted: ${formatBytes(d.canary.mismatched_bytes)} of ${formatBytes(d.canary.sampled_bytes)} sampled unchanged blocks differ; its next job copies it in full`,
        ]
      : []),
  ]);
}

function errorText(job: Job): string {
  const what = [job.error_code, job.error_message].filter(Boolean).join(': ') || 'no reason given';
  return job.retryable ? `${what} (retryable)` : what;
}

/** How a followed job ended: a headline, then the per-disk change_ids that were recorded. */
export function outcomeView(job: Job): string {
  const head = `${job.job_type} ${jobIdOf(job)} ${job.status}`;
  if (job.status === 'completed') {
    const took = formatDuration(secondsBetween(job.started_at ?? job.created_at, job.completed_at));
    return [
      `${head}: ${bytesOrDash(job.bytes_transferred)} transferred in ${took}`,
      changeIdTable(job.disks),
    ].join('\n');
  }
  const lines = [`${head}: ${errorText(job)}`];
  // Disks that finished before a failure have their change_ids recorded too: show them.
  if (job.disks.some((d) => d.change_id !== null)) lines.push(changeIdTable(job.disks));
  return lines.join('\n');
}

export function jobView(job: Job): string {
  const took = secondsBetween(job.started_at ?? job.created_at, job.completed_at);
  const fields: [string, string | number | null][] = [
    [job.job_type, jobIdOf(job)],
    ['status', job.status],
    ['vm', job.vm_name],
    ['type', job.backup_type],
    ['parent', job.parent_backup_id],
    ['repository', job.repository_id],
    ['policy', job.policy_id],
    ['transferred', bytesOrDash(job.bytes_transferred)],
  ];
  if (!isFinished(job.status)) fields.push(['progress', progressText(job)]);
  if (job.error_code || job.error_message) fields.push(['error', errorText(job)]);
  fields.push(
    ['created', job.created_at],
    ['started', job.started_at],
    [
      'completed',
      job.completed_at === null ? null : `${job.completed_at} (took ${formatDuration(took)})`,
    ],
  );
  return [
    formatFields(fields),
    '',
    formatTable(
      ['DISK', 'CHANGE_ID', 'PREVIOUS_CHANGE_ID', 'TRANSFERRED', 'SIZE', 'TARGET'],
      job.disks.map((d) => [
        d.disk_key,
        d.change_id,
        d.previous_change_id,
        bytesOrDash(d.bytes_transferred),
        bytesOrDash(d.bytes_total),
        d.target_path,
      ]),
    ),
    ...fullCopyNotes(job.disks),
  ].join('\n');
}

export function jobTable(jobs: Job[]): string {
  if (jobs.length === 0) return 'no backups';
  return formatTable(
    ['ID', 'VM', 'TYPE', 'STATUS', 'TRANSFERRED', 'CREATED'],
    jobs.map((j) => [
      jobIdOf(j),
      j.vm_name,
      j.backup_type,
      j.status,
      bytesOrDash(j.bytes_transferred),
      j.created_at,
    ]),
  );
}
