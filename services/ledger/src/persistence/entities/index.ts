// Jobs and their disks are read and written as rows by the event path (persistence/job-rows.ts,
// event-store.ts); the schema of every table comes from the migrations.
import { PolicyEntity } from './policy.entity';
import { RepositoryEntity } from './repository.entity';
import { VmDiskEntity, VmEntity } from './vm.entity';

export { PolicyEntity, RepositoryEntity, VmDiskEntity, VmEntity };
export const entities = [RepositoryEntity, PolicyEntity, VmEntity, VmDiskEntity];
