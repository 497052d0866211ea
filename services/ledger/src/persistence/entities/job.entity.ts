import { Column, Entity, JoinColumn, ManyToOne, OneToMany, PrimaryColumn } from 'typeorm';
import { bigintNumber } from './transformers';

/** One row per job of either type. Written by the event path's SQL; read through TypeORM. */
@Entity('backup_jobs')
export class JobEntity {
  @PrimaryColumn({ type: 'varchar', length: 128 })
  id!: string;

  @Column({ name: 'job_type', type: 'varchar', length: 16 })
  jobType!: string;

  @Column({ name: 'vm_name', type: 'varchar', length: 128 })
  vmName!: string;

  @Column({ name: 'backup_type', type: 'varchar', length: 16 })
  backupType!: string;

  @Column({ name: 'repository_id', type: 'varchar', length: 64 })
  repositoryId!: string;

  @Column({ name: 'policy_id', type: 'varchar', length: 64, nullable: true })
  policyId!: string | null;

  @Column({ name: 'parent_backup_id', type: 'varchar', length: 128, nullable: true })
  parentBackupId!: string | null;

  @Column({ type: 'varchar', length: 16 })
  status!: string;

  @Column({ name: 'change_id', type: 'varchar', length: 255, nullable: true })
  changeId!: string | null;

  @Column({ name: 'bytes_transferred', type: 'bigint', nullable: true, transformer: bigintNumber })
  bytesTransferred!: number | null;

  @Column({ name: 'error_code', type: 'varchar', length: 64, nullable: true })
  errorCode!: string | null;

  @Column({ name: 'error_message', type: 'text', nullable: true })
  errorMessage!: string | null;

  @Column({ type: 'boolean', nullable: true })
  retryable!: boolean | null;

  @Column({ name: 'progress_phase', type: 'varchar', length: 16, nullable: true })
  progressPhase!: string | null;

  @Column({ name: 'progress_sequence', type: 'bigint', nullable: true, transformer: bigintNumber })
  progressSequence!: number | null;

  @Column({
    name: 'progress_bytes_done',
    type: 'bigint',
    nullable: true,
    transformer: bigintNumber,
  })
  progressBytesDone!: number | null;

  @Column({
    name: 'progress_bytes_total',
    type: 'bigint',
    nullable: true,
    transformer: bigintNumber,
  })
  progressBytesTotal!: number | null;

  @Column({ name: 'progress_rate', type: 'bigint', nullable: true, transformer: bigintNumber })
  progressRate!: number | null;

  @Column({ name: 'created_at', type: 'datetime', precision: 3 })
  createdAt!: Date;

  @Column({ name: 'started_at', type: 'datetime', precision: 3, nullable: true })
  startedAt!: Date | null;

  @Column({ name: 'completed_at', type: 'datetime', precision: 3, nullable: true })
  completedAt!: Date | null;

  @Column({ name: 'updated_at', type: 'datetime', precision: 3 })
  updatedAt!: Date;

  @OneToMany(() => DiskEntity, (disk) => disk.job)
  disks!: DiskEntity[];
}

/** One row per job and disk: change tracking is per disk. */
@Entity('backup_disks')
export class DiskEntity {
  @PrimaryColumn({ name: 'job_id', type: 'varchar', length: 128 })
  jobId!: string;

  @PrimaryColumn({ name: 'disk_key', type: 'varchar', length: 64 })
  diskKey!: string;

  @Column({ type: 'int' })
  position!: number;

  @Column({ type: 'varchar', length: 4096, nullable: true })
  source!: string | null;

  @Column({ name: 'change_id', type: 'varchar', length: 255, nullable: true })
  changeId!: string | null;

  @Column({ name: 'previous_change_id', type: 'varchar', length: 255, nullable: true })
  previousChangeId!: string | null;

  @Column({ name: 'bytes_transferred', type: 'bigint', nullable: true, transformer: bigintNumber })
  bytesTransferred!: number | null;

  @Column({ name: 'bytes_total', type: 'bigint', nullable: true, transformer: bigintNumber })
  bytesTotal!: number | null;

  @Column({ name: 'target_path', type: 'varchar', length: 4096, nullable: true })
  targetPath!: string | null;

  @Column({ name: 'backing_path', type: 'varchar', length: 4096, nullable: true })
  backingPath!: string | null;

  @ManyToOne(() => JobEntity, (job) => job.disks, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'job_id' })
  job!: JobEntity;
}
