import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Chains that keep every backup point usable:
 * - `backup_disks.full_reason`: why a disk of an incremental was copied in full;
 * - `backup_disks.canary_*`: the CBT canary's sampled and mismatched bytes;
 * - `backup_jobs.completion_seq`: the ledger's own order of completions (the chain head is the
 *   highest of its chain, never the latest by a runner's clock), drawn from `ledger_counters`;
 *   jobs completed before this migration are numbered in their `completed_at` order;
 * - `backup_jobs.heartbeat_at`: when the bus took the runner's latest word, for the lease.
 */
export class Chains1764600000000 implements MigrationInterface {
  name = 'Chains1764600000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE backup_disks
      ADD COLUMN full_reason VARCHAR(1024) NULL,
      ADD COLUMN canary_sampled_bytes BIGINT NULL,
      ADD COLUMN canary_mismatched_bytes BIGINT NULL`);
    await q.query(`ALTER TABLE backup_jobs
      ADD COLUMN completion_seq BIGINT NULL,
      ADD COLUMN heartbeat_at DATETIME(3) NULL,
      ADD UNIQUE KEY uq_backup_jobs_completion_seq (completion_seq),
      ADD KEY ix_backup_jobs_head (vm_name, job_type, repository_id, completion_seq)`);
    await q.query(`CREATE TABLE ledger_counters (
      name VARCHAR(32) NOT NULL PRIMARY KEY,
      value BIGINT NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
    await q.query(`SET @seq := 0`);
    await q.query(`UPDATE backup_jobs SET completion_seq = (@seq := @seq + 1)
      WHERE status = 'completed' ORDER BY completed_at, created_at, id`);
    await q.query(
      `INSERT INTO ledger_counters (name, value)
       SELECT 'completion', COALESCE(MAX(completion_seq), 0) FROM backup_jobs`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE ledger_counters`);
    await q.query(`ALTER TABLE backup_jobs DROP KEY ix_backup_jobs_head,
      DROP KEY uq_backup_jobs_completion_seq, DROP COLUMN heartbeat_at, DROP COLUMN completion_seq`);
    await q.query(`ALTER TABLE backup_disks DROP COLUMN canary_mismatched_bytes,
      DROP COLUMN canary_sampled_bytes, DROP COLUMN full_reason`);
  }
}
