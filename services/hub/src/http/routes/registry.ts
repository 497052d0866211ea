import { api } from '@tidemark/shared';
import type { JobDeps } from '../../jobs/start-job';
import { contractRoute } from '../contract-route';
import type { HubApp } from '../hub-app';
import type { IssuePathConfig } from '../errors';
import { pageDescription, policyWire, repositoryWire, vmWire } from '../views';

const { routes } = api;

/** Where the ledger's issues about a page's query appear on the wire. */
const pageIssuePaths = {
  issuePaths: { limit: 'querystring.limit', cursor: 'querystring.cursor' },
} satisfies IssuePathConfig;

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
    ...contractRoute(routes.listVms, {
      tags: ['vms'],
      summary: 'Registered VMs, by name, a page at a time',
      description: pageDescription,
    }),
    config: pageIssuePaths,
    handler: async (request) => {
      const page = await bus.ask('vms.list', request.query);
      return { vms: page.items.map(vmWire), next_cursor: page.nextCursor };
    },
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
      summary: 'Repositories, oldest first, a page at a time',
      description: pageDescription,
    }),
    config: pageIssuePaths,
    handler: async (request) => {
      const page = await bus.ask('repositories.list', request.query);
      return { repositories: page.items.map(repositoryWire), next_cursor: page.nextCursor };
    },
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
    ...contractRoute(routes.listPolicies, {
      tags: ['policies'],
      summary: 'Policies, oldest first, a page at a time',
      description: pageDescription,
    }),
    config: pageIssuePaths,
    handler: async (request) => {
      const page = await bus.ask('policies.list', request.query);
      return { policies: page.items.map(policyWire), next_cursor: page.nextCursor };
    },
  });
}
