// The hub's REST routes (v1): how each is called and what it answers. The hub registers exactly
// these (its OpenAPI document is built from them); the CLI calls them and checks each answer
// against the route's success schema.
import type { z } from 'zod';
import * as wire from './schemas';

/** Error statuses a route may answer, each with `ErrorBody`; any route may also answer 500. */
export type ErrorStatus = 400 | 401 | 404 | 409 | 503;

export interface Route {
  method: 'GET' | 'POST' | 'PUT';
  /** fastify's form: `:name` stands for the path parameter `name`. */
  path: string;
  params?: z.ZodType;
  querystring?: z.ZodType;
  body?: z.ZodType;
  /** The one success status, with the schema of its answer. */
  response: { 200: z.ZodType } | { 201: z.ZodType } | { 202: z.ZodType };
  errors: readonly ErrorStatus[];
}

export const routes = {
  health: { method: 'GET', path: '/healthz', response: { 200: wire.Health }, errors: [] },

  createVm: {
    method: 'POST',
    path: '/api/v1/vms',
    body: wire.CreateVmBody,
    response: { 201: wire.Vm },
    errors: [400, 401, 409, 503],
  },
  listVms: {
    method: 'GET',
    path: '/api/v1/vms',
    response: { 200: wire.VmList },
    errors: [401, 503],
  },
  updateVm: {
    method: 'PUT',
    path: '/api/v1/vms/:vm_name',
    params: wire.VmParams,
    body: wire.UpdateVmBody,
    response: { 200: wire.Vm },
    errors: [400, 401, 404, 503],
  },
  createRepository: {
    method: 'POST',
    path: '/api/v1/repositories',
    body: wire.CreateRepositoryBody,
    response: { 201: wire.Repository },
    errors: [400, 401, 409, 503],
  },
  listRepositories: {
    method: 'GET',
    path: '/api/v1/repositories',
    response: { 200: wire.RepositoryList },
    errors: [401, 503],
  },
  createPolicy: {
    method: 'POST',
    path: '/api/v1/policies',
    body: wire.CreatePolicyBody,
    response: { 201: wire.Policy },
    errors: [400, 401, 409, 503],
  },
  listPolicies: {
    method: 'GET',
    path: '/api/v1/policies',
    response: { 200: wire.PolicyList },
    errors: [401, 503],
  },

  startBackup: {
    method: 'POST',
    path: '/api/v1/backups',
    body: wire.StartJobBody,
    response: { 202: wire.AcceptedBackup },
    errors: [400, 401, 404, 409, 503],
  },
  startReplication: {
    method: 'POST',
    path: '/api/v1/replications',
    body: wire.StartJobBody,
    response: { 202: wire.AcceptedReplication },
    errors: [400, 401, 404, 409, 503],
  },
  getBackup: {
    method: 'GET',
    path: '/api/v1/backups/:backup_id',
    params: wire.BackupParams,
    response: { 200: wire.BackupJob },
    errors: [400, 401, 404, 503],
  },
  getReplication: {
    method: 'GET',
    path: '/api/v1/replications/:job_id',
    params: wire.ReplicationParams,
    response: { 200: wire.ReplicationJob },
    errors: [400, 401, 404, 503],
  },
  listBackups: {
    method: 'GET',
    path: '/api/v1/backups',
    querystring: wire.ListBackupsQuery,
    response: { 200: wire.BackupList },
    errors: [400, 401, 503],
  },
  cancelBackup: {
    method: 'POST',
    path: '/api/v1/backups/:backup_id/cancel',
    params: wire.BackupParams,
    body: wire.CancelJobBody,
    response: { 202: wire.EventAccepted },
    errors: [400, 401, 404, 409, 503],
  },
  cancelReplication: {
    method: 'POST',
    path: '/api/v1/replications/:job_id/cancel',
    params: wire.ReplicationParams,
    body: wire.CancelJobBody,
    response: { 202: wire.EventAccepted },
    errors: [400, 401, 404, 409, 503],
  },

  // For old clients that report completions over REST.
  completeBackup: {
    method: 'POST',
    path: '/api/v1/backups/:backup_id/complete',
    params: wire.BackupParams,
    body: wire.CompleteBackupBody,
    response: { 202: wire.EventAccepted },
    errors: [400, 401, 404, 409, 503],
  },
  replicationChangeId: {
    method: 'POST',
    path: '/api/v1/replications/:job_id/changeid',
    params: wire.ReplicationParams,
    body: wire.ReplicationChangeIdBody,
    response: { 202: wire.EventAccepted },
    errors: [400, 401, 404, 409, 503],
  },
} as const satisfies Record<string, Route>;

export type RouteName = keyof typeof routes;

/** The schema of a route's success answer. */
export type SuccessSchema<R extends Route> = R['response'][keyof R['response']];
