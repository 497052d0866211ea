import { api, JobType, type Logger } from '@tidemark/shared';
import type { z } from 'zod';
import { cancelJob } from '../../jobs/cancel-job';
import { newJobId, startJob, type JobDeps } from '../../jobs/start-job';
import { contractRoute } from '../contract-route';
import type { IssuePathConfig } from '../errors';
import type { HubApp } from '../hub-app';
import { tagJob } from '../job-log';
import { acceptedFields, eventAcceptedView, jobFields } from '../views';

const { routes } = api;
type StartBody = z.output<typeof api.StartJobBody>;

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

  app.route({
    ...contractRoute(routes.startBackup, {
      tags: ['backups'],
      summary: 'Start a backup',
      description:
        'Plans the backup, has the ledger create it (404 unknown VM, repository or policy; ' +
        '409 an active backup of the VM, or an incremental without a chain head), then hands ' +
        'it to the runners.',
    }),
    handler: async (request, reply) => {
      const started = await start(JobType.Backup, request);
      return reply.code(202).send({ backup_id: started.job.jobId, ...acceptedFields(started) });
    },
  });

  app.route({
    ...contractRoute(routes.startReplication, {
      tags: ['replications'],
      summary: 'Start a replication',
      description: 'As a backup, into one replica per disk that each replication updates.',
    }),
    handler: async (request, reply) => {
      const started = await start(JobType.Replication, request);
      return reply.code(202).send({ job_id: started.job.jobId, ...acceptedFields(started) });
    },
  });

  app.route({
    ...contractRoute(routes.getBackup, {
      tags: ['backups'],
      summary: 'A job, of either type (job_type says which)',
    }),
    config: { issuePaths: { jobId: 'params.backup_id' } } satisfies IssuePathConfig,
    handler: async (request) => {
      tagJob(request, request.params.backup_id);
      const job = await bus.ask('jobs.get', { jobId: request.params.backup_id });
      return { backup_id: job.jobId, ...jobFields(job) };
    },
  });

  app.route({
    ...contractRoute(routes.getReplication, {
      tags: ['replications'],
      summary: 'A job, of either type (job_type says which)',
    }),
    config: { issuePaths: { jobId: 'params.job_id' } } satisfies IssuePathConfig,
    handler: async (request) => {
      tagJob(request, request.params.job_id);
      const job = await bus.ask('jobs.get', { jobId: request.params.job_id });
      return { job_id: job.jobId, ...jobFields(job) };
    },
  });

  app.route({
    ...contractRoute(routes.listBackups, {
      tags: ['backups'],
      summary: 'Backup jobs, newest first',
    }),
    config: {
      issuePaths: { vmName: 'querystring.vm_name', status: 'querystring.status' },
    } satisfies IssuePathConfig,
    handler: async (request) => {
      const { vm_name, status, limit } = request.query;
      const jobs = await bus.ask('jobs.list', {
        vmName: vm_name,
        status,
        limit,
        jobType: JobType.Backup,
      });
      return { backups: jobs.map((job) => ({ backup_id: job.jobId, ...jobFields(job) })) };
    },
  });

  const cancelDescription =
    'Publishes backup.cancel for a queued or running job of either type (409 once it has ended). ' +
    'The job shows cancelled as soon as the ledger applied it; the runner running it stops the ' +
    'copy and removes what the attempt wrote. A copy that had already finished is still recorded ' +
    'as completed, with its change_ids.';
  for (const [route, param, tag] of [
    [routes.cancelBackup, 'backup_id', 'backups'],
    [routes.cancelReplication, 'job_id', 'replications'],
  ] as const) {
    app.route({
      ...contractRoute(route, {
        tags: [tag],
        summary: 'Cancel a job',
        description: cancelDescription,
      }),
      config: { issuePaths: { jobId: `params.${param}` } } satisfies IssuePathConfig,
      handler: async (request, reply) => {
        const jobId = (request.params as Record<string, string>)[param];
        tagJob(request, jobId);
        const done = await cancelJob(
          { bus, log: request.log },
          { jobId, reason: request.body?.reason ?? null },
        );
        return reply.code(202).send(eventAcceptedView(done));
      },
    });
  }
}
