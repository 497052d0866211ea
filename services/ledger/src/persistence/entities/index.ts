import { JobEntity, DiskEntity } from './job.entity';
import { PolicyEntity } from './policy.entity';
import { RepositoryEntity } from './repository.entity';
import { VmDiskEntity, VmEntity } from './vm.entity';

export { JobEntity, DiskEntity, PolicyEntity, RepositoryEntity, VmDiskEntity, VmEntity };
export const entities = [
  RepositoryEntity,
  PolicyEntity,
  VmEntity,
  VmDiskEntity,
  JobEntity,
  DiskEntity,
];
