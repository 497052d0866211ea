import { ApiError, createHubApi, HubUnreachableError, jobIdOf } from './api';

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

/** A fetch that answers every call with `answer` and records what was asked. */
function fakeFetch(answer: () => Response | Promise<Response>) {
  return jest.fn<Promise<Response>, [string, RequestInit]>(async () => answer());
}

describe('hub API client', () => {
  it('sends JSON with the bearer token and returns the parsed answer', async () => {
    const vm = { vm_name: 'pg01', disks: [], created_at: '2025-01-01T00:00:00.000Z' };
    const fetch = fakeFetch(() => json(201, vm));
    const api = createHubApi({ url: 'http://hub:8082/', token: 's3cret', fetch });
    const disks = [{ disk_key: 'disk-0', driver: 'qemu' as const, path: '/vms/a.qcow2' }];

    await expect(api.createVm({ vm_name: 'pg01', disks })).resolves.toEqual(vm);

    const [url, init] = fetch.mock.calls[0];
    expect(url).toBe('http://hub:8082/api/v1/vms');
    expect(init.method).toBe('POST');
    expect(init.headers).toMatchObject({
      authorization: 'Bearer s3cret',
      'content-type': 'application/json',
    });
    expect(JSON.parse(String(init.body))).toEqual({ vm_name: 'pg01', disks });
  });

  it('sends no authorization header without a token, and keeps a path prefix', async () => {
    const fetch = fakeFetch(() => json(200, { repositories: [] }));
    await createHubApi({ url: 'https://example.org/tidemark', fetch }).listRepositories();
    const [url, init] = fetch.mock.calls[0];
    expect(url).toBe('https://example.org/tidemark/api/v1/repositories');
    expect(init.headers).not.toHaveProperty('authorization');
  });

  it('puts the backup filter in the query string and escapes ids in paths', async () => {
    const fetch = fakeFetch(() => json(200, { backups: [] }));
    const api = createHubApi({ url: 'http://hub', fetch });
    await api.listBackups({ vm_name: 'pg 01', status: 'failed', limit: 5 });
    await api.listBackups();
    // The fake's `{ backups: [] }` is no job: refused, after the URL was asked.
    await expect(api.getReplication('job/1')).rejects.toBeInstanceOf(ApiError);
    expect(fetch.mock.calls.map(([url]) => url)).toEqual([
      'http://hub/api/v1/backups?vm_name=pg+01&status=failed&limit=5',
      'http://hub/api/v1/backups',
      'http://hub/api/v1/replications/job%2F1',
    ]);
  });

  it("turns an error answer into an ApiError with the hub's message and details", async () => {
    const body = {
      error: 'invalid request body',
      details: [{ path: 'body.vm_name', message: 'must not be empty' }],
    };
    const api = createHubApi({ url: 'http://hub', fetch: fakeFetch(() => json(400, body)) });
    const err = await api.createRepository({ name: '', path: '/x' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({
      status: 400,
      message: 'invalid request body',
      details: body.details,
      retryAfterSeconds: null,
    });
  });

  it('keeps Retry-After of a 503', async () => {
    const fetch = fakeFetch(() =>
      json(503, { error: 'the ledger did not answer', details: [] }, { 'retry-after': '5' }),
    );
    await expect(createHubApi({ url: 'http://hub', fetch }).listVms()).rejects.toMatchObject({
      status: 503,
      retryAfterSeconds: 5,
    });
  });

  it('still gives a readable ApiError when the error answer is not the contract shape', async () => {
    const fetch = fakeFetch(
      () => new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }),
    );
    await expect(createHubApi({ url: 'http://hub', fetch }).listVms()).rejects.toMatchObject({
      status: 502,
      message: 'the hub answered 502 Bad Gateway',
      details: [],
    });
  });

  it('still reads an error answer whose details are not the contract shape', async () => {
    const fetch = fakeFetch(() => json(409, { error: 'already exists', details: 'none' }));
    await expect(createHubApi({ url: 'http://hub', fetch }).listVms()).rejects.toMatchObject({
      status: 409,
      message: 'already exists',
      details: [],
    });
  });

  it("refuses an answer its route's schema does not allow, naming the field", async () => {
    const vm = { vm_name: 'pg01', disks: [{ disk_key: 'disk-0', driver: 'qemu' }], created_at: 7 };
    const fetch = fakeFetch(() => json(200, { vms: [vm] }));
    const err = await createHubApi({ url: 'http://hub', fetch })
      .listVms()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({
      status: 200,
      message:
        'the hub at http://hub answered GET /api/v1/vms with a body its contract does not allow',
      details: [
        { path: 'response.vms.0.disks.0.path', message: expect.stringMatching(/expected string/) },
        { path: 'response.vms.0.created_at', message: expect.stringMatching(/expected string/) },
      ],
    });
  });

  it('hands on the answer as its schema reads it: fields it does not know are dropped', async () => {
    const policy = {
      id: 'p1',
      name: 'nightly',
      schedule: null,
      retention_count: 7,
      created_at: '2025-01-01T00:00:00.000Z',
    };
    const fetch = fakeFetch(() => json(201, { ...policy, added_later: true }));
    await expect(
      createHubApi({ url: 'http://hub', fetch }).createPolicy({ name: 'nightly' }),
    ).resolves.toEqual(policy);
  });

  it('reports a hub that does not answer, naming the URL without credentials', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    const fetch = fakeFetch(() => {
      throw new TypeError('fetch failed', { cause: refused });
    });
    const err = await createHubApi({ url: 'http://admin:pw@hub:8082', token: 't', fetch })
      .listVms()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubUnreachableError);
    expect((err as Error).message).toBe(
      'could not reach the hub at http://hub:8082: connection refused (ECONNREFUSED)',
    );
  });

  it('reads the id of either job type', () => {
    expect(jobIdOf({ backup_id: 'backup-1' })).toBe('backup-1');
    expect(jobIdOf({ job_id: 'repl-1' })).toBe('repl-1');
  });
});
