import { api } from '@tidemark/shared';
import { reportCompletion } from '../../jobs/report-completion';
import type { JobDeps } from '../../jobs/start-job';
import { contractRoute, type RouteDoc } from '../contract-route';
import type { IssuePathConfig } from '../errors';
import type { HubApp } from '../hub-app';
import { tagJob } from '../job-log';
import { eventAcceptedView } from '../views';

/**
 * The old system's completion endpoints, for clients not yet publishing `backup.completed`
 * themselves. Either path works for either job type: the type comes from the ledger's record.
 */
export function compatibilityRoutes(app: HubApp, deps: JobDeps): void {
  const doc = (summary: string): RouteDoc => ({
    tags: ['compatibility'],
    summary,
    description:
      'For old clients: records the change_id of a one-disk job of either type by publishing ' +
      'backup.completed for it (409 for a job with several disks).',
  });

  app.route({
    ...contractRoute(api.routes.completeBackup, doc('Report a job complete (old clients)')),
    config: { issuePaths: { jobId: 'params.backup_id' } } satisfies IssuePathConfig,
    handler: async (request, reply) => {
      const log = request.log;
      tagJob(request, request.params.backup_id);
      const done = await reportCompletion(
        { ...deps, log },
        {
          jobId: request.params.backup_id,
          changeId: request.body.change_id,
          bytesTransferred: request.body.bytes_transferred,
        },
      );
      return reply.code(202).send(eventAcceptedView(done));
    },
  });

  app.route({
    ...contractRoute(api.routes.replicationChangeId, doc("Report a job's change_id (old clients)")),
    config: { issuePaths: { jobId: 'params.job_id' } } satisfies IssuePathConfig,
    handler: async (request, reply) => {
      const log = request.log;
      tagJob(request, request.params.job_id);
      const done = await reportCompletion(
        { ...deps, log },
        {
          jobId: request.params.job_id,
          changeId: request.body.change_id,
          bytesTransferred: request.body.bytes_transferred ?? 0,
        },
      );
      return reply.code(202).send(eventAcceptedView(done));
    },
  });
}
