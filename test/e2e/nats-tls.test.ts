/**
 * TLS to NATS by configuration: nats-server with a certificate from a throw-away CA, the three
 * services given only TIDEMARK_NATS_TLS_CA (and a tls:// URL), one backup through the API.
 * A client without the CA is refused.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { natsConnectOptions } from '@tidemark/shared';
import { MiB, createImage, tempDir, writeDisk } from '../support/disks';
import { freePort, testServers, uniqueName, waitFor, withDatabase } from '../support/env';
import { startSystem, startedJobId, type RunningSystem } from '../support/system';

jest.setTimeout(120_000);

const tmp = tempDir('tidemark-tls-');
const file = (name: string) => join(tmp.dir, name);
let server: ChildProcess;
let system: RunningSystem | undefined;
let url: string;

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

beforeAll(async () => {
  // A CA, and a server certificate for 127.0.0.1 signed by it.
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=tidemark-test-ca',
    ].concat(['-keyout', file('ca-key.pem'), '-out', file('ca.pem')]),
  );
  openssl(
    ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1'].concat([
      '-keyout',
      file('server-key.pem'),
      '-out',
      file('server.csr'),
    ]),
  );
  writeFileSync(file('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(
    [
      'x509',
      '-req',
      '-in',
      file('server.csr'),
      '-CA',
      file('ca.pem'),
      '-CAkey',
      file('ca-key.pem'),
    ].concat([
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      file('san.ext'),
      '-out',
      file('server.pem'),
    ]),
  );
  const port = await freePort();
  url = `tls://127.0.0.1:${port}`;
  server = spawn(
    'nats-server',
    ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', file('js')].concat([
      '--tls',
      '--tlscert',
      file('server.pem'),
      '--tlskey',
      file('server-key.pem'),
    ]),
    { stdio: 'ignore' },
  );
  const settings = { TIDEMARK_NATS_URL: url, TIDEMARK_NATS_TLS_CA: file('ca.pem') };
  await waitFor(
    'nats-server with TLS',
    async () => {
      const nc = await connect({
        ...natsConnectOptions(settings, 'probe'),
        maxReconnectAttempts: 0,
      });
      await nc.close();
      return true;
    },
    10_000,
    100,
  );
});

afterAll(async () => {
  await system?.stop();
  server?.kill();
  tmp.remove();
});

describe('NATS over TLS', () => {
  it('refuses a client that does not trust the server’s CA', async () => {
    await expect(
      connect({ servers: url, maxReconnectAttempts: 0, reconnect: false, timeout: 3000 }),
    ).rejects.toThrow();
  });

  it('runs the three services with only TIDEMARK_NATS_TLS_CA added, and a backup completes', async () => {
    system = await startSystem({
      natsUrl: url,
      mysqlUrl: withDatabase(testServers().mysqlUrl, uniqueName('tidemark_tls_')),
      busPrefix: uniqueName('tls'),
      dir: file('services'),
      roots: { repository: [file('repository')], source: [tmp.dir] },
      serviceEnv: Object.fromEntries(
        ['ledger', 'hub', 'appliance-runner'].map((s) => [
          s,
          { TIDEMARK_NATS_TLS_CA: file('ca.pem') },
        ]),
      ),
    });
    const image = file('pg.qcow2');
    createImage(image, 4 * MiB);
    writeDisk(image, [{ offset: 0, length: 1 * MiB, pattern: 0x77 }]);
    const repo = await system.api<{ id: string }>('POST', '/api/v1/repositories', {
      name: 'tls',
      path: file('repository'),
    });
    expect((await system.cli(['vm', 'add', 'pg', '--disk', `disk-0=${image}`])).code).toBe(0);
    const run = await system.cli(['backup', 'start', 'pg', '--repo', repo.body.id, '--follow']);
    expect({ code: run.code, stderr: run.code === 0 ? '' : run.stderr }).toEqual({
      code: 0,
      stderr: '',
    });
    const job = await system.api<{ status: string; disks: Array<{ change_id: string }> }>(
      'GET',
      `/api/v1/backups/${startedJobId(run.stdout)}`,
    );
    expect(job.body).toMatchObject({ status: 'completed' });
    expect(job.body.disks[0]?.change_id).toMatch(/\/1$/);
  });
});
