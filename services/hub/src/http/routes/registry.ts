import { z } from 'zod';
import type { JobDeps } from '../../jobs/start-job';
import type { HubApp } from '../hub-app';
import {
  CreatePolicyBody,
  CreateRepositoryBody,
  CreateVmBody,
  Policy,
  Repository,
  Vm,
  errors,
} from '../schemas';
import { policyWire, repositoryWire, vmWire } from '../views';

/** VMs, repositories and policies: stored by the ledger, passed through. */
export function registryRoutes(app: HubApp, { bus }: JobDeps): void {
  app.post(
    '/api/v1/vms',
    {
      schema: {
        tags: ['vms'],
        summary: 'Register a VM and its disks',
        body: CreateVmBody,
        response: { 201: Vm, ...errors(400, 401, 409, 503) },
      },
    },
    async (request, reply) => {
      const { vm_name, disks } = request.body;
      const vm = await bus.ask('vms.create', {
        vmName: vm_name,
        disks: disks.map((d) => ({ diskKey: d.disk_key, driver: d.driver, path: d.path })),
      });
      return reply.code(201).send(vmWire(vm));
    },
  );

  app.get(
    '/api/v1/vms',
    {
      schema: {
        tags: ['vms'],
        summary: 'List registered VMs',
        response: { 200: z.object({ vms: z.array(Vm) }), ...errors(401, 503) },
      },
    },
    async () => ({ vms: (await bus.ask('vms.list', {})).map(vmWire) }),
  );

  app.post(
    '/api/v1/repositories',
    {
      schema: {
        tags: ['repositories'],
        summary: 'Create a backup repository',
        body: CreateRepositoryBody,
        response: { 201: Repository, ...errors(400, 401, 409, 503) },
      },
    },
    async (request, reply) => {
      const repo = await bus.ask('repositories.create', request.body);
      return reply.code(201).send(repositoryWire(repo));
    },
  );

  app.get(
    '/api/v1/repositories',
    {
      schema: {
        tags: ['repositories'],
        summary: 'List repositories',
        response: { 200: z.object({ repositories: z.array(Repository) }), ...errors(401, 503) },
      },
    },
    async () => ({ repositories: (await bus.ask('repositories.list', {})).map(repositoryWire) }),
  );

  app.post(
    '/api/v1/policies',
    {
      schema: {
        tags: ['policies'],
        summary: 'Create a backup policy',
        body: CreatePolicyBody,
        response: { 201: Policy, ...errors(400, 401, 409, 503) },
      },
    },
    async (request, reply) => {
      const { name, schedule, retention_count } = request.body;
      const policy = await bus.ask('policies.create', {
        name,
        schedule: schedule ?? null,
        retentionCount: retention_count ?? null,
      });
      return reply.code(201).send(policyWire(policy));
    },
  );

  app.get(
    '/api/v1/policies',
    {
      schema: {
        tags: ['policies'],
        summary: 'List policies',
        response: { 200: z.object({ policies: z.array(Policy) }), ...errors(401, 503) },
      },
    },
    async () => ({ policies: (await bus.ask('policies.list', {})).map(policyWire) }),
  );
}
