// One function per command: call the API, then print its JSON (--json) or a view of it.
import type { JobType } from '@tidemark/shared';
import {
  jobIdOf,
  type BackupFilter,
  type HubApi,
  type Job,
  type NewPolicy,
  type StartJobRequest,
  type VmDisk,
} from './api';
import { ExitCode, JobEndedError } from './errors';
import { followJob, type ProgressStream } from './follow';
import {
  acceptedView,
  jobTable,
  jobView,
  outcomeView,
  policyTable,
  repositoryTable,
  vmAddedView,
  vmTable,
} from './views';

export interface Context {
  api: HubApi;
  json: boolean;
  stdout: NodeJS.WritableStream;
  /** Progress and error messages. */
  stderr: ProgressStream;
}

/** `--json` prints the API's document as is; otherwise the human view. */
function show(ctx: Context, document: unknown, view: () => string): void {
  ctx.stdout.write(ctx.json ? `${JSON.stringify(document, null, 2)}\n` : `${view()}\n`);
}

export async function addVm(ctx: Context, vmName: string, disks: VmDisk[]): Promise<void> {
  const vm = await ctx.api.createVm({ vm_name: vmName, disks });
  show(ctx, vm, () => vmAddedView(vm));
}

export async function listVms(ctx: Context): Promise<void> {
  const answer = await ctx.api.listVms();
  show(ctx, answer, () => vmTable(answer.vms));
}

export async function addRepository(ctx: Context, name: string, path: string): Promise<void> {
  const repo = await ctx.api.createRepository({ name, path });
  show(ctx, repo, () => repositoryTable([repo]));
}

export async function listRepositories(ctx: Context): Promise<void> {
  const answer = await ctx.api.listRepositories();
  show(ctx, answer, () => repositoryTable(answer.repositories));
}

export async function addPolicy(ctx: Context, policy: NewPolicy): Promise<void> {
  const created = await ctx.api.createPolicy(policy);
  show(ctx, created, () => policyTable([created]));
}

export async function listPolicies(ctx: Context): Promise<void> {
  const answer = await ctx.api.listPolicies();
  show(ctx, answer, () => policyTable(answer.policies));
}

export async function showJob(ctx: Context, jobType: JobType, jobId: string): Promise<void> {
  const job =
    jobType === 'backup' ? await ctx.api.getBackup(jobId) : await ctx.api.getReplication(jobId);
  show(ctx, job, () => jobView(job));
}

export async function listBackups(ctx: Context, filter: BackupFilter): Promise<void> {
  const answer = await ctx.api.listBackups(filter);
  show(ctx, answer, () => jobTable(answer.backups));
}

/** Asks the hub to cancel a job; prints that the cancel was accepted. */
export async function cancelJob(
  ctx: Context,
  jobType: JobType,
  jobId: string,
  reason: string | undefined,
): Promise<void> {
  const accepted = await ctx.api.cancelJob(jobType, jobId, reason);
  show(
    ctx,
    accepted,
    () => `${accepted.job_type} ${accepted.job_id} cancel requested (event ${accepted.event_id})`,
  );
}

/**
 * Starts a backup or replication. With `follow`, the accepted job is printed first (its id on
 * the first line), then progress goes to stderr until the job ends; a job that did not complete
 * throws JobEndedError.
 */
export async function startJob(
  ctx: Context,
  jobType: JobType,
  request: StartJobRequest,
  follow: boolean,
): Promise<void> {
  const accepted =
    jobType === 'backup'
      ? await ctx.api.startBackup(request)
      : await ctx.api.startReplication(request);
  if (!follow) {
    show(ctx, accepted, () => acceptedView(accepted, request.vm_name));
    return;
  }
  // With --json, stdout holds one document: the job as it ended.
  if (!ctx.json) ctx.stdout.write(`${acceptedView(accepted, request.vm_name)}\n`);

  const jobId = jobIdOf(accepted);
  const getJob = (): Promise<Job> =>
    jobType === 'backup' ? ctx.api.getBackup(jobId) : ctx.api.getReplication(jobId);
  const job = await untilInterrupted(ctx, jobType, jobId, () => followJob(getJob, ctx.stderr));

  if (ctx.json) ctx.stdout.write(`${JSON.stringify(job, null, 2)}\n`);
  if (job.status !== 'completed') throw new JobEndedError(job, outcomeView(job));
  if (!ctx.json) ctx.stdout.write(`${outcomeView(job)}\n`);
}

/** Ctrl-C stops the following, not the job: say so and how to look at it later. */
async function untilInterrupted<T>(
  ctx: Context,
  jobType: JobType,
  jobId: string,
  work: () => Promise<T>,
): Promise<T> {
  const command = jobType === 'backup' ? 'backup' : 'replicate';
  const onInterrupt = () => {
    ctx.stderr.write(
      `\nstopped following; ${jobType} ${jobId} goes on (tidemark ${command} show ${jobId})\n`,
    );
    process.exit(ExitCode.Interrupted);
  };
  process.once('SIGINT', onInterrupt);
  try {
    return await work();
  } finally {
    process.removeListener('SIGINT', onInterrupt);
  }
}
