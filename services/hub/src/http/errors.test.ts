import { wirePath } from './errors';

describe('wirePath', () => {
  it("names a domain field as the request's field", () => {
    expect(wirePath('vmName')).toBe('body.vm_name');
    expect(wirePath('data.policyId')).toBe('body.policy_id');
    expect(wirePath('disks.0.diskKey')).toBe('body.disks.0.disk_key');
  });

  it('keeps wire paths and the whole-request path as they are', () => {
    expect(wirePath('params.backup_id')).toBe('params.backup_id');
    expect(wirePath('querystring.status')).toBe('querystring.status');
    expect(wirePath('')).toBe('');
  });

  it("follows the route's own names first", () => {
    expect(wirePath('jobId', { jobId: 'params.job_id' })).toBe('params.job_id');
    expect(wirePath('data.vmName', { vmName: 'querystring.vm_name' })).toBe('querystring.vm_name');
  });
});
