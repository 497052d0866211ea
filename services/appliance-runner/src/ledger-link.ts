import type { NatsConnection } from '@nats-io/transport-node';
import {
  askLedger,
  ConflictError,
  NotFoundError,
  ValidationError,
  type BusTopology,
  type JobView,
  type Logger,
  type TidemarkEvent,
} from '@tidemark/shared';

/** What the runner asks the ledger (request/reply): a job's record, a repository's root, and to record a completion. */
export interface LedgerLink {
  /** The job as the ledger has it; 'unknown' when it has none, 'unavailable' when it did not say. */
  recordedStatus(jobId: string, log: Logger): Promise<JobView | 'unknown' | 'unavailable'>;
  repositoryRoot(repositoryId: string): Promise<string>;
  /**
   * Has the ledger record `completion` (the same event the stream holds: whichever arrives
   * first applies it, the other finds it applied) and says whether it did: null when recorded
   * with this job's change_ids, else why not. While the ledger cannot answer it waits — the
   * source keeps both change_ids usable meanwhile — unless `giveUp()` says the runner is
   * stopping and it has waited long enough.
   */
  recordCompletion(
    completion: TidemarkEvent<'backup.completed'>,
    log: Logger,
    giveUp: () => boolean,
  ): Promise<string | null>;
}

const ASK_MS = 5000;

export function createLedgerLink(nc: NatsConnection, topo: BusTopology): LedgerLink {
  return {
    async recordedStatus(jobId, log) {
      try {
        return await askLedger(nc, topo, 'jobs.get', { jobId }, ASK_MS);
      } catch (err) {
        log.debug({ err: String(err) }, 'ledger has no status for the job');
        return err instanceof NotFoundError ? 'unknown' : 'unavailable';
      }
    },

    async repositoryRoot(repositoryId) {
      return (await askLedger(nc, topo, 'repositories.get', { id: repositoryId }, ASK_MS)).path;
    },

    async recordCompletion(completion, log, giveUp) {
      for (let attempt = 1; ; attempt++) {
        try {
          const job = await askLedger(
            nc,
            topo,
            'jobs.complete',
            { jobId: completion.jobId, eventId: completion.id, data: completion.data },
            ASK_MS,
          );
          const recorded = new Map(job.disks.map((d) => [d.diskKey, d.changeId]));
          const differing = completion.data.disks.filter(
            (d) => recorded.get(d.diskKey) !== d.changeId,
          );
          if (job.status === 'completed' && differing.length === 0) return null;
          return `the ledger holds the job as ${job.status} with change_id ${[...recorded]
            .map(([k, v]) => `${k}=${v ?? 'none'}`)
            .join(', ')}`;
        } catch (err) {
          if (err instanceof ConflictError || err instanceof ValidationError) return err.message;
          // Unconfirmed, the source keeps both change_ids, and the chain's next job starts
          // from whichever the ledger recorded.
          if (giveUp() && attempt >= 20)
            return `the runner stopped before the ledger confirmed the completion: ${String(err)}`;
          // Not known yet (its start or this completion still on the way) or no answer.
          if (attempt % 10 === 1)
            log.warn(
              { err: String(err), attempt },
              'the ledger has not confirmed the completion yet; waiting',
            );
          await new Promise((r) => setTimeout(r, Math.min(5000, 250 * attempt)));
        }
      }
    },
  };
}
