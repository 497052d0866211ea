import { Column, Entity, PrimaryColumn } from 'typeorm';

@Entity('backup_policies')
export class PolicyEntity {
  @PrimaryColumn({ type: 'varchar', length: 64 })
  id!: string;

  @Column({ type: 'varchar', length: 128, unique: true })
  name!: string;

  @Column({ type: 'varchar', length: 128, nullable: true })
  schedule!: string | null;

  @Column({ name: 'retention_count', type: 'int', nullable: true })
  retentionCount!: number | null;

  @Column({ name: 'created_at', type: 'datetime', precision: 3 })
  createdAt!: Date;
}
