import { JobType, type Logger } from '@tidemark/shared';
import { z } from 'zod';
import { cancelJob } from '../../jobs/cancel-job';
import { newJobId, startJob, type JobDeps } from '../../jobs/start-job';
import type { HubApp } from '../hub-app';
import type { IssuePathConfig } from '../errors';
import { tagJob } from '../job-log';
import {
  AcceptedBackup,
  AcceptedReplication,
  BackupJob,
  BackupParams,
  CancelJobBody,
  EventAccepted,
  ListBackupsQuery,
  ReplicationJob,
  ReplicationParams,
  StartJobBody,
  errors,
} from '../schemas';
import { acceptedFields, eventAcceptedView, jobFields } from '../views';

type StartBody = z.output<typeof StartJobBody>;

export function jobRoutes(app: HubApp, deps: JobDeps): void {
  const { bus } = deps;
  const start = (jobType: JobType, request: { body: StartBody; log: Logger }) => {
    const jobId = newJobId(jobType);
    const log = request.log;
    tagJob(request, jobId);
    return startJob(
      { bus, log },
      {
        jobId,
        jobType,
        vmName: request.body.vm_name,
        repositoryId: request.body.repository_id,
        requested: request.body.backup_type,
        policyId: request.body.policy_id ?? null,
      },
    );
  };

  app.post(
    '/api/v1/backups',
    {
      schema: {
        tags: ['backups'],
        summary: 'Start a backup',
        description:
          'Plans the backup, has the ledger create it (404 unknown VM, repository or policy; ' +
          '409 an active backup of the VM, or an incremental without a chain head), then hands ' +
          'it to the runners.',
        body: StartJobBody,
        response: { 202: AcceptedBackup, ...errors(400, 401, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      const started = await start(JobType.Backup, request);
      return reply.code(202).send({ backup_id: started.job.jobId, ...acceptedFields(started) });
    },
  );

  app.post(
    '/api/v1/replications',
    {
      schema: {
        tags: ['replications'],
        summary: 'Start a replication',
        description: 'As a backup, into one replica per disk that each replication updates.',
        body: StartJobBody,
        response: { 202: AcceptedReplication, ...errors(400, 401, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      const started = await start(JobType.Replication, request);
      return reply.code(202).send({ job_id: started.job.jobId, ...acceptedFields(started) });
    },
  );

  app.get(
    '/api/v1/backups/:backup_id',
    {
      schema: {
        tags: ['backups'],
        summary: 'A job, of either type (job_type says which)',
        params: BackupParams,
        response: { 200: BackupJob, ...errors(400, 401, 404, 503) },
      },
      config: { issuePaths: { jobId: 'params.backup_id' } } satisfies IssuePathConfig,
    },
    async (request) => {
      tagJob(request, request.params.backup_id);
      const job = await bus.ask('jobs.get', { jobId: request.params.backup_id });
      return { backup_id: job.jobId, ...jobFields(job) };
    },
  );

  app.get(
    '/api/v1/replications/:job_id',
    {
      schema: {
        tags: ['replications'],
        summary: 'A job, of either type (job_type says which)',
        params: ReplicationParams,
        response: { 200: ReplicationJob, ...errors(400, 401, 404, 503) },
      },
      config: { issuePaths: { jobId: 'params.job_id' } } satisfies IssuePathConfig,
    },
    async (request) => {
      tagJob(request, request.params.job_id);
      const job = await bus.ask('jobs.get', { jobId: request.params.job_id });
      return { job_id: job.jobId, ...jobFields(job) };
    },
  );

  app.get(
    '/api/v1/backups',
    {
      schema: {
        tags: ['backups'],
        summary: 'Backup jobs, newest first',
        querystring: ListBackupsQuery,
        response: { 200: z.object({ backups: z.array(BackupJob) }), ...errors(400, 401, 503) },
      },
      config: {
        issuePaths: { vmName: 'querystring.vm_name', status: 'querystring.status' },
      } satisfies IssuePathConfig,
    },
    async (request) => {
      const { vm_name, status, limit } = request.query;
      const jobs = await bus.ask('jobs.list', {
        vmName: vm_name,
        status,
        limit,
        jobType: JobType.Backup,
      });
      return { backups: jobs.map((job) => ({ backup_id: job.jobId, ...jobFields(job) })) };
    },
  );

  const cancelDescription =
    'Publishes backup.cancel for a queued or running job of either type (409 once it has ended). ' +
    'The job shows cancelled as soon as the ledger applied it; the runner running it stops the ' +
    'copy and removes what the attempt wrote. A copy that had already finished is still recorded ' +
    'as completed, with its change_ids.';
  for (const [path, param, tag] of [
    ['/api/v1/backups/:backup_id/cancel', 'backup_id', 'backups'],
    ['/api/v1/replications/:job_id/cancel', 'job_id', 'replications'],
  ] as const) {
    app.post(
      path,
      {
        schema: {
          tags: [tag],
          summary: 'Cancel a job',
          description: cancelDescription,
          params: param === 'backup_id' ? BackupParams : ReplicationParams,
          body: CancelJobBody,
          response: { 202: EventAccepted, ...errors(400, 401, 404, 409, 503) },
        },
        config: { issuePaths: { jobId: `params.${param}` } } satisfies IssuePathConfig,
      },
      async (request, reply) => {
        const jobId = (request.params as Record<string, string>)[param];
        tagJob(request, jobId);
        const done = await cancelJob(
          { bus, log: request.log },
          { jobId, reason: request.body?.reason ?? null },
        );
        return reply.code(202).send(eventAcceptedView(done));
      },
    );
  }
}
