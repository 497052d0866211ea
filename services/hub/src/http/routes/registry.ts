import { api } from '@tidemark/shared';
import type { JobDeps } from '../../jobs/start-job';
import { contractRoute } from '../contract-route';
import type { HubApp } from '../hub-app';
import { policyWire, repositoryWire, vmWire } from '../views';

const { routes } = api;

/** VMs, repositories and policies: stored by the ledger, passed through. */
export function registryRoutes(app: HubApp, { bus }: JobDeps): void {
  app.route({
    ...contractRoute(routes.createVm, { tags: ['vms'], summary: 'Register a VM and its disks' }),
    handler: async (request, reply) => {
      const { vm_name, disks } = request.body;
      const vm = await bus.ask('vms.create', {
        vmName: vm_name,
        disks: disks.map((d) => ({ diskKey: d.disk_key, driver: d.driver, path: d.path })),
      });
      return reply.code(201).send(vmWire(vm));
    },
  });

  app.route({
    ...contractRoute(routes.updateVm, {
      tags: ['vms'],
      summary: "Replace a VM's disk list",
      description:
        "A disk added is copied in full by the VM's next auto job of each chain while the others stay incremental (its full_reason says so); a disk removed is no longer copied.",
    }),
    handler: async (request) => {
      const vm = await bus.ask('vms.update', {
        vmName: request.params.vm_name,
        disks: request.body.disks.map((d) => ({
          diskKey: d.disk_key,
          driver: d.driver,
          path: d.path,
        })),
      });
      return vmWire(vm);
    },
  });

  app.route({
    ...contractRoute(routes.listVms, { tags: ['vms'], summary: 'List registered VMs' }),
    handler: async () => ({ vms: (await bus.ask('vms.list', {})).map(vmWire) }),
  });

  app.route({
    ...contractRoute(routes.createRepository, {
      tags: ['repositories'],
      summary: 'Create a backup repository',
    }),
    handler: async (request, reply) => {
      const repo = await bus.ask('repositories.create', request.body);
      return reply.code(201).send(repositoryWire(repo));
    },
  });

  app.route({
    ...contractRoute(routes.listRepositories, {
      tags: ['repositories'],
      summary: 'List repositories',
    }),
    handler: async () => ({
      repositories: (await bus.ask('repositories.list', {})).map(repositoryWire),
    }),
  });

  app.route({
    ...contractRoute(routes.createPolicy, {
      tags: ['policies'],
      summary: 'Create a backup policy',
    }),
    handler: async (request, reply) => {
      const { name, schedule, retention_count } = request.body;
      const policy = await bus.ask('policies.create', {
        name,
        schedule: schedule ?? null,
        retentionCount: retention_count ?? null,
      });
      return reply.code(201).send(policyWire(policy));
    },
  });

  app.route({
    ...contractRoute(routes.listPolicies, { tags: ['policies'], summary: 'List policies' }),
    handler: async () => ({ policies: (await bus.ask('policies.list', {})).map(policyWire) }),
  });
}
