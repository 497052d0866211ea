import { uniqueName } from '../support/env';
import {
  hubSuite,
  registerVm,
  startTestHub,
  streamCount,
  type TestHub,
} from '../support/hub-harness';

describe('hub: requests, auth and docs', () => {
  const suite = hubSuite();
  let vmName: string;

  beforeAll(async () => {
    vmName = await registerVm(suite.hub);
  });

  describe('bad bodies: 400 naming the field, nothing published', () => {
    const valid = () => ({ vm_name: vmName, repository_id: suite.repo.id, backup_type: 'full' });
    const cases: [string, () => Record<string, unknown>, string[]][] = [
      [
        'a missing vm_name',
        () => ({ repository_id: suite.repo.id, backup_type: 'full' }),
        ['body.vm_name'],
      ],
      ['backup_type "weekly"', () => ({ ...valid(), backup_type: 'weekly' }), ['body.backup_type']],
      [
        'a numeric repository_id',
        () => ({ ...valid(), repository_id: 42 }),
        ['body.repository_id'],
      ],
      [
        'unknown fields',
        () => ({ ...valid(), colour: 'red', when: 'now' }),
        ['body.colour', 'body.when'],
      ],
      [
        'a vm_name that leaves its directory',
        () => ({ ...valid(), vm_name: '../etc' }),
        ['body.vm_name'],
      ],
    ];

    it.each(cases)('refuses %s', async (_name, body, paths) => {
      for (const route of ['/api/v1/backups', '/api/v1/replications']) {
        const before = await streamCount(suite.world);
        const res = await suite.hub.call<{ error: string; details: { path: string }[] }>(
          'POST',
          route,
          body(),
        );
        expect(res.status).toBe(400);
        expect(res.body.details.map((d) => d.path)).toEqual(paths);
        for (const path of paths) expect(res.body.error).toContain(path);
        expect(await streamCount(suite.world)).toBe(before);
      }
      expect(
        await suite.world.count('SELECT COUNT(*) FROM backup_jobs WHERE vm_name = ?', [vmName]),
      ).toBe(0);
    });

    it('refuses a 2 MB body, and a body that is not JSON', async () => {
      const before = await streamCount(suite.world);
      const big = await suite.hub.call('POST', '/api/v1/backups', undefined, {
        rawBody: JSON.stringify({ ...valid(), padding: 'x'.repeat(2 * 1024 * 1024) }),
      });
      expect(big.status).toBe(400);
      expect(big.body).toEqual({
        error: expect.stringContaining('larger than the limit of 1048576 bytes'),
        details: [{ path: 'body', message: 'must be at most 1048576 bytes' }],
      });
      const broken = await suite.hub.call('POST', '/api/v1/backups', undefined, {
        rawBody: '{"vm_name":',
      });
      expect(broken.status).toBe(400);
      expect(broken.body).toMatchObject({ details: [{ path: 'body' }] });
      const text = await suite.hub.call('POST', '/api/v1/backups', undefined, {
        rawBody: 'vm_name=x',
        headers: { 'content-type': 'text/plain' },
      });
      expect(text.status).toBe(400);
      expect(text.body).toMatchObject({ details: [{ path: 'headers.content-type' }] });
      expect(await streamCount(suite.world)).toBe(before);
    });

    it('names bad fields of the registry and compatibility routes too', async () => {
      const vm = await suite.hub.call('POST', '/api/v1/vms', {
        vm_name: uniqueName('vm'),
        disks: [{ disk_key: 'd0', driver: 'vmware', path: 'relative/path' }],
      });
      expect(vm.status).toBe(400);
      expect(vm.body).toMatchObject({
        details: [{ path: 'body.disks.0.driver' }, { path: 'body.disks.0.path' }],
      });
      const repo = await suite.hub.call<{ error: string }>('POST', '/api/v1/repositories', {
        name: uniqueName('r'),
        path: '/srv/tidemark/../../etc',
      });
      expect(repo.status).toBe(400);
      expect(repo.body).toMatchObject({ details: [{ path: 'body.path' }] });
      expect(repo.body.error).toContain('normal path');
      // `/` or a system directory is never a repository's root: nothing could stop its jobs
      // from writing over the system.
      for (const path of ['/', '/etc', '/usr/local/backups', '/var/lib/mysql']) {
        const refused = await suite.hub.call<{ error: string }>('POST', '/api/v1/repositories', {
          name: uniqueName('r'),
          path,
        });
        expect({ path, status: refused.status }).toEqual({ path, status: 400 });
        expect(refused.body).toMatchObject({ details: [{ path: 'body.path' }] });
        expect(refused.body.error).toContain('must not be / or a system directory');
      }
      const policy = await suite.hub.call('POST', '/api/v1/policies', {
        name: uniqueName('p'),
        retention_count: 1.5,
      });
      expect(policy.body).toMatchObject({ details: [{ path: 'body.retention_count' }] });
      const complete = await suite.hub.call('POST', '/api/v1/backups/backup-x/complete', {
        change_id: 'uuid/1',
      });
      expect(complete.body).toMatchObject({ details: [{ path: 'body.bytes_transferred' }] });
      const list = await suite.hub.call('GET', '/api/v1/backups?status=sleeping');
      expect(list.status).toBe(400);
      expect(list.body).toMatchObject({ details: [{ path: 'querystring.status' }] });
    });
  });

  it('registers VMs, repositories and policies, and refuses a second VM of the same name', async () => {
    const name = uniqueName('vm');
    const disks = [{ disk_key: 'disk-0', driver: 'qemu', path: '/var/lib/vms/a.qcow2' }];
    const created = await suite.hub.call('POST', '/api/v1/vms', { vm_name: name, disks });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ vm_name: name, disks, created_at: expect.any(String) });
    const again = await suite.hub.call('POST', '/api/v1/vms', { vm_name: name, disks });
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ details: [{ path: 'body.vm_name' }] });
    const vms = await suite.hub.call<{ vms: { vm_name: string }[] }>('GET', '/api/v1/vms');
    expect(vms.body.vms.map((v) => v.vm_name)).toContain(name);

    const repos = await suite.hub.call<{ repositories: unknown[] }>('GET', '/api/v1/repositories');
    expect(repos.body.repositories).toContainEqual({
      id: suite.repo.id,
      name: expect.any(String),
      path: suite.repo.path,
      created_at: expect.any(String),
    });
    const policy = await suite.hub.call('POST', '/api/v1/policies', { name: uniqueName('manual') });
    expect(policy.status).toBe(201);
    expect(policy.body).toMatchObject({ schedule: null, retention_count: null });
    const policies = await suite.hub.call<{ policies: unknown[] }>('GET', '/api/v1/policies');
    expect(policies.body.policies).toContainEqual(policy.body);
  });

  it('serves its OpenAPI document and human-readable docs', async () => {
    const doc = await suite.hub.call<{
      openapi: string;
      paths: Record<
        string,
        Record<string, { requestBody?: { content: Record<string, { schema: unknown }> } }>
      >;
      components: { schemas: Record<string, unknown> };
    }>('GET', '/openapi.json');
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining([
        '/healthz',
        '/api/v1/vms',
        '/api/v1/repositories',
        '/api/v1/policies',
        '/api/v1/backups',
        '/api/v1/backups/{backup_id}',
        '/api/v1/replications',
        '/api/v1/replications/{job_id}',
        '/api/v1/backups/{backup_id}/complete',
        '/api/v1/replications/{job_id}/changeid',
      ]),
    );
    expect(
      doc.body.paths['/api/v1/backups'].post.requestBody?.content['application/json'].schema,
    ).toMatchObject({
      type: 'object',
      required: expect.arrayContaining(['vm_name', 'repository_id', 'backup_type']),
      additionalProperties: false,
    });
    expect(Object.keys(doc.body.components.schemas)).toEqual(
      expect.arrayContaining(['BackupJob', 'AcceptedBackup', 'Error']),
    );
    const docs = await fetch(`${suite.hub.url}/docs`);
    expect(docs.status).toBe(200);
    expect(await docs.text()).toContain('<html');
  });

  it('logs every line about a job with its jobId', async () => {
    const res = await suite.hub.call<{ backup_id: string }>('POST', '/api/v1/backups', {
      vm_name: await registerVm(suite.hub),
      repository_id: suite.repo.id,
      backup_type: 'full',
    });
    const jobId = res.body.backup_id;
    await suite.hub.call('GET', `/api/v1/backups/${jobId}`);
    const lines = suite.hub.logLines.filter((l) => JSON.stringify(l).includes(jobId));
    expect(lines.map((l) => l.msg)).toEqual(
      expect.arrayContaining(['job queued and backup.start published', 'request completed']),
    );
    expect(lines.filter((l) => l.msg === 'request completed')).toHaveLength(2);
    for (const line of lines) expect(line).toMatchObject({ service: 'hub', jobId });
  });

  describe('with TIDEMARK_API_TOKEN', () => {
    const token = `tok-${uniqueName('')}${uniqueName('')}`;
    let secured: TestHub;
    beforeAll(async () => {
      secured = await startTestHub(suite.world, { TIDEMARK_API_TOKEN: token });
    });
    afterAll(() => secured?.close());

    it('answers 401 without the token or with a wrong one; health and docs stay open', async () => {
      const none = await secured.call('GET', '/api/v1/vms', undefined, { token: null });
      expect(none.status).toBe(401);
      expect(none.headers.get('www-authenticate')).toBe('Bearer');
      expect(none.body).toEqual({
        error: 'this route needs an API token',
        details: [{ path: 'headers.authorization', message: expect.any(String) }],
      });
      const wrong = await secured.call('POST', '/api/v1/backups', {}, { token: 'not-it' });
      expect(wrong.status).toBe(401);
      const unknownRoute = await secured.call('GET', '/api/v1/nothing', undefined, { token: null });
      expect(unknownRoute.status).toBe(401);

      expect((await secured.call('GET', '/api/v1/vms')).status).toBe(200);
      const health = await secured.call('GET', '/healthz', undefined, { token: null });
      expect(health).toMatchObject({ status: 200, body: { status: 'ok' } });
      expect((await secured.call('GET', '/openapi.json', undefined, { token: null })).status).toBe(
        200,
      );
      expect((await fetch(`${secured.url}/docs`)).status).toBe(200);
    });

    it('listens on all interfaces by default, and never logs the token', async () => {
      expect(secured.logLines.find((l) => l.msg === 'hub ready')).toMatchObject({
        host: '0.0.0.0',
        auth: 'bearer token',
      });
      await secured.call('GET', '/api/v1/vms', undefined, { token: `${token}x` });
      expect(JSON.stringify(secured.logLines)).not.toContain(token);
    });
  });

  it('without a token listens on 127.0.0.1 only, whatever TIDEMARK_HUB_HOST says, and says so', async () => {
    const open = await startTestHub(suite.world, { TIDEMARK_HUB_HOST: '0.0.0.0' });
    try {
      expect(open.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(open.logLines.find((l) => l.level === 40)).toMatchObject({
        host: '127.0.0.1',
        refusedHost: '0.0.0.0',
        msg: expect.stringContaining('TIDEMARK_API_TOKEN is not set'),
      });
      expect(open.logLines.find((l) => l.msg === 'hub ready')).toMatchObject({ host: '127.0.0.1' });
    } finally {
      await open.close();
    }
  });

  it('answers an unknown route with 404 in the same error shape', async () => {
    const res = await suite.hub.call('GET', '/api/v2/anything');
    expect(res).toMatchObject({
      status: 404,
      body: { error: 'no route GET /api/v2/anything', details: [] },
    });
  });
});
