import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The ledger's first schema. Nullable foreign keys are NULL, never ''. "One active job per VM
 * and job type" is a unique index on a generated column that holds the VM name only while the
 * job is queued or running (NULLs never collide), so the database itself enforces it.
 */
export class InitialSchema1763800000000 implements MigrationInterface {
  name = 'InitialSchema1763800000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE backup_repositories (
      id VARCHAR(64) NOT NULL PRIMARY KEY,
      name VARCHAR(128) NOT NULL,
      path VARCHAR(4096) NOT NULL,
      created_at DATETIME(3) NOT NULL,
      UNIQUE KEY uq_backup_repositories_name (name)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
    await q.query(`CREATE TABLE backup_policies (
      id VARCHAR(64) NOT NULL PRIMARY KEY,
      name VARCHAR(128) NOT NULL,
      schedule VARCHAR(128) NULL,
      retention_count INT NULL,
      created_at DATETIME(3) NOT NULL,
      UNIQUE KEY uq_backup_policies_name (name)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
    await q.query(`CREATE TABLE vm_contexts (
      vm_name VARCHAR(128) NOT NULL PRIMARY KEY,
      created_at DATETIME(3) NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
    await q.query(`CREATE TABLE vm_disks (
      vm_name VARCHAR(128) NOT NULL,
      disk_key VARCHAR(64) NOT NULL,
      driver VARCHAR(32) NOT NULL,
      path VARCHAR(4096) NOT NULL,
      position INT NOT NULL,
      PRIMARY KEY (vm_name, disk_key),
      CONSTRAINT fk_vm_disks_vm FOREIGN KEY (vm_name) REFERENCES vm_contexts (vm_name) ON DELETE CASCADE
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
    await q.query(`CREATE TABLE backup_jobs (
      id VARCHAR(128) NOT NULL PRIMARY KEY,
      job_type VARCHAR(16) NOT NULL,
      vm_name VARCHAR(128) NOT NULL,
      backup_type VARCHAR(16) NOT NULL,
      repository_id VARCHAR(64) NOT NULL,
      policy_id VARCHAR(64) NULL,
      parent_backup_id VARCHAR(128) NULL,
      status VARCHAR(16) NOT NULL,
      change_id VARCHAR(255) NULL,
      bytes_transferred BIGINT NULL,
      error_code VARCHAR(64) NULL,
      error_message TEXT NULL,
      retryable BOOLEAN NULL,
      progress_phase VARCHAR(16) NULL,
      progress_sequence BIGINT NULL,
      progress_bytes_done BIGINT NULL,
      progress_bytes_total BIGINT NULL,
      progress_rate BIGINT NULL,
      created_at DATETIME(3) NOT NULL,
      started_at DATETIME(3) NULL,
      completed_at DATETIME(3) NULL,
      updated_at DATETIME(3) NOT NULL,
      active_vm_name VARCHAR(128) GENERATED ALWAYS AS
        (CASE WHEN status IN ('queued', 'running') THEN vm_name ELSE NULL END) STORED,
      UNIQUE KEY uq_backup_jobs_one_active (active_vm_name, job_type),
      KEY ix_backup_jobs_chain (vm_name, job_type, status, completed_at),
      KEY ix_backup_jobs_created (created_at),
      CONSTRAINT chk_backup_jobs_type CHECK (job_type IN ('backup', 'replication')),
      CONSTRAINT chk_backup_jobs_backup_type CHECK (backup_type IN ('full', 'incremental')),
      CONSTRAINT chk_backup_jobs_status CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
      CONSTRAINT fk_backup_jobs_repository FOREIGN KEY (repository_id) REFERENCES backup_repositories (id),
      CONSTRAINT fk_backup_jobs_policy FOREIGN KEY (policy_id) REFERENCES backup_policies (id),
      CONSTRAINT fk_backup_jobs_parent FOREIGN KEY (parent_backup_id) REFERENCES backup_jobs (id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
    await q.query(`CREATE TABLE backup_disks (
      job_id VARCHAR(128) NOT NULL,
      disk_key VARCHAR(64) NOT NULL,
      position INT NOT NULL,
      source VARCHAR(4096) NULL,
      change_id VARCHAR(255) NULL,
      previous_change_id VARCHAR(255) NULL,
      bytes_transferred BIGINT NULL,
      bytes_total BIGINT NULL,
      target_path VARCHAR(4096) NULL,
      backing_path VARCHAR(4096) NULL,
      PRIMARY KEY (job_id, disk_key),
      CONSTRAINT fk_backup_disks_job FOREIGN KEY (job_id) REFERENCES backup_jobs (id) ON DELETE CASCADE
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
    // Every applied event's id, written in the same transaction as its state change: a
    // redelivered event finds its id here and changes nothing.
    await q.query(`CREATE TABLE processed_events (
      event_id VARCHAR(128) NOT NULL PRIMARY KEY,
      job_id VARCHAR(128) NOT NULL,
      event_type VARCHAR(32) NOT NULL,
      outcome VARCHAR(16) NOT NULL,
      applied_at DATETIME(3) NOT NULL,
      KEY ix_processed_events_job (job_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
  }

  async down(q: QueryRunner): Promise<void> {
    for (const table of [
      'processed_events',
      'backup_disks',
      'backup_jobs',
      'vm_disks',
      'vm_contexts',
      'backup_policies',
      'backup_repositories',
    ]) {
      await q.query(`DROP TABLE ${table}`);
    }
  }
}
