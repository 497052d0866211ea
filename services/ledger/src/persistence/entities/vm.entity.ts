import { Column, Entity, JoinColumn, ManyToOne, OneToMany, PrimaryColumn } from 'typeorm';

/** A registered VM: what the hub plans jobs for. */
@Entity('vm_contexts')
export class VmEntity {
  @PrimaryColumn({ name: 'vm_name', type: 'varchar', length: 128 })
  vmName!: string;

  @Column({ name: 'created_at', type: 'datetime', precision: 3 })
  createdAt!: Date;

  @OneToMany(() => VmDiskEntity, (disk) => disk.vm, { cascade: ['insert'] })
  disks!: VmDiskEntity[];
}

@Entity('vm_disks')
export class VmDiskEntity {
  @PrimaryColumn({ name: 'vm_name', type: 'varchar', length: 128 })
  vmName!: string;

  @PrimaryColumn({ name: 'disk_key', type: 'varchar', length: 64 })
  diskKey!: string;

  @Column({ type: 'varchar', length: 32 })
  driver!: string;

  @Column({ type: 'varchar', length: 4096 })
  path!: string;

  /** Order of the disk within its VM. */
  @Column({ type: 'int' })
  position!: number;

  @ManyToOne(() => VmEntity, (vm) => vm.disks, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'vm_name' })
  vm!: VmEntity;
}
