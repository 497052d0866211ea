import { randomUUID } from 'node:crypto';
import {
  NotFoundError,
  UnavailableError,
  forJob,
  makeEvent,
  type FailureCode,
  type JobType,
  type JobView,
  type Logger,
  type StartData,
} from '@tidemark/shared';
import type { Bus } from '../nats/bus';
import { RequestedBackupType, planJob } from '../planning/plan';

export interface JobDeps {
  bus: Bus;
  log: Logger;
}

/** The event a request about a job turned into. */
export interface PublishedJobEvent {
  jobId: string;
  jobType: JobType;
  eventId: string;
}

export interface StartedJob {
  /** The queued job as the ledger recorded it. */
  job: JobView;
  /** The data of its `backup.start`. */
  plan: StartData;
}

/** A new job's id: `backup-<uuid>` or `replication-<uuid>`. */
export function newJobId(jobType: JobType): string {
  return `${jobType}-${randomUUID()}`;
}

export interface StartJobRequest {
  /** From `newJobId`, chosen by the caller so that its own log lines can carry it. */
  jobId: string;
  jobType: JobType;
  vmName: string;
  repositoryId: string;
  requested: RequestedBackupType;
  policyId: string | null;
}

/**
 * Starts a backup or replication, in the design's order: look up the VM, the repository and
 * (for an incremental) the chain head; plan; have the ledger create the queued job, which
 * checks the references and "one active job per VM"; only then publish `backup.start`, with
 * the job id as event id. A runner never receives a job that the ledger refused.
 */
export async function startJob(deps: JobDeps, req: StartJobRequest): Promise<StartedJob> {
  const { bus } = deps;
  const vm = await bus.ask('vms.get', { vmName: req.vmName });
  const repository = await bus
    .ask('repositories.get', { id: req.repositoryId })
    .catch(renameNotFound('repositoryId'));
  // Every chain's head: this job's chain builds on its own, and the others' tell the source
  // which of their tracking no head needs any more.
  const chainHeads = await bus.ask('chain-heads', { vmName: vm.vmName });
  const ownHead =
    chainHeads.find((h) => h.jobType === req.jobType && h.repositoryId === repository.id) ?? null;
  const chainHead = req.requested === RequestedBackupType.Full ? null : ownHead;

  const { jobId } = req;
  const log = forJob(deps.log, jobId, { jobType: req.jobType, vmName: vm.vmName });
  const plan = planJob({ ...req, vm, repository, chainHead, chainHeads });
  // Built (and validated) before the job exists: nothing can refuse it after the ledger said yes.
  const event = makeEvent('backup.start', { id: jobId, jobId, jobType: req.jobType, data: plan });

  let job: JobView;
  try {
    job = await bus.ask('jobs.create', { jobId, jobType: req.jobType, ...plan });
  } catch (err) {
    if (err instanceof UnavailableError) {
      // It may have been created all the same; a queued job whose start never came is failed
      // by the reaper. Nothing is published for it.
      log.warn({ err }, 'the ledger did not confirm jobs.create; start not published');
    }
    throw err;
  }

  try {
    await bus.publish(event);
  } catch (err) {
    log.error({ err }, 'backup.start could not be published; failing the queued job');
    const failed = await failUnstarted(bus, log, jobId, err);
    throw new UnavailableError(
      `job ${jobId} was created but its start could not be published, so it ` +
        `${failed ? 'was failed' : 'will be failed'} (START_NOT_PUBLISHED); try again`,
      { cause: err },
    );
  }
  log.info(
    { backupType: plan.backupType, parentJobId: plan.parentJobId, disks: plan.disks.length },
    'job queued and backup.start published',
  );
  return { job, plan };
}

/** Whether the ledger failed the job now; if not, the reaper does after its timeout. */
async function failUnstarted(bus: Bus, log: Logger, jobId: string, why: unknown): Promise<boolean> {
  try {
    await bus.ask('jobs.fail', {
      jobId,
      code: 'START_NOT_PUBLISHED' satisfies FailureCode,
      message: `the hub could not publish backup.start: ${String(why)}`.slice(0, 4096),
      retryable: true,
    });
    log.info('queued job failed with START_NOT_PUBLISHED');
    return true;
  } catch (err) {
    log.error({ err }, 'the ledger did not fail the unstarted job; the reaper will');
    return false;
  }
}

/** The ledger names its own request's field (`id`); the caller knows which one it was. */
function renameNotFound(path: string) {
  return (err: unknown): never => {
    if (err instanceof NotFoundError) {
      throw new NotFoundError(err.message, [{ path, message: 'not found' }]);
    }
    throw err;
  };
}
