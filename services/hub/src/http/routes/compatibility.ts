import { reportCompletion } from '../../jobs/report-completion';
import type { JobDeps } from '../../jobs/start-job';
import type { HubApp } from '../hub-app';
import type { IssuePathConfig } from '../errors';
import { tagJob } from '../job-log';
import { eventAcceptedView } from '../views';
import {
  BackupParams,
  CompleteBackupBody,
  EventAccepted,
  ReplicationChangeIdBody,
  ReplicationParams,
  errors,
} from '../schemas';

/**
 * The old system's completion endpoints, for clients not yet publishing `backup.completed`
 * themselves. Either path works for either job type: the type comes from the ledger's record.
 */
export function compatibilityRoutes(app: HubApp, deps: JobDeps): void {
  const description =
    'For old clients: records the change_id of a one-disk job of either type by publishing ' +
    'backup.completed for it (409 for a job with several disks).';

  app.post(
    '/api/v1/backups/:backup_id/complete',
    {
      schema: {
        tags: ['compatibility'],
        summary: 'Report a job complete (old clients)',
        description,
        params: BackupParams,
        body: CompleteBackupBody,
        response: { 202: EventAccepted, ...errors(400, 401, 404, 409, 503) },
      },
      config: { issuePaths: { jobId: 'params.backup_id' } } satisfies IssuePathConfig,
    },
    async (request, reply) => {
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
  );

  app.post(
    '/api/v1/replications/:job_id/changeid',
    {
      schema: {
        tags: ['compatibility'],
        summary: "Report a job's change_id (old clients)",
        description,
        params: ReplicationParams,
        body: ReplicationChangeIdBody,
        response: { 202: EventAccepted, ...errors(400, 401, 404, 409, 503) },
      },
      config: { issuePaths: { jobId: 'params.job_id' } } satisfies IssuePathConfig,
    },
    async (request, reply) => {
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
  );
}
