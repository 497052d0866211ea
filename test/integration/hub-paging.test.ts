/**
 * Every list of the REST API pages: 5,000 backups and 5,000 replications (and a thousand VMs,
 * hundreds of repositories and policies) written straight into the ledger's database, read back
 * through the hub with `cursor` until `next_cursor` is null: each row exactly once, no page over
 * its limit, rows written meanwhile never shifting a page. A limit over the maximum and a
 * cursor the list did not give are 400s naming the field.
 */
import { PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX } from '@tidemark/shared';
import { insertJobs, insertRegistry, insertVms, type BulkJob } from '../support/bulk-rows';
import { uniqueName } from '../support/env';
import { startTestHub, type TestHub } from '../support/hub-harness';
import { createLedgerWorld, seedReferences, type LedgerWorld } from '../support/ledger-harness';

const JOBS_PER_TYPE = 5000;
const VMS = 1000;
const REGISTRY_ROWS = 250;

type Row = Record<string, unknown> & { created_at: string };
type PageAnswer = Record<string, unknown> & { next_cursor: string | null };

interface ListRoute {
  path: string;
  /** The answer's key holding the page's items. */
  key: string;
  /** An item's id. */
  idOf: (row: Row) => string;
}

const routes: Record<string, ListRoute> = {
  backups: { path: '/api/v1/backups', key: 'backups', idOf: (r) => String(r.backup_id) },
  replications: {
    path: '/api/v1/replications',
    key: 'replications',
    idOf: (r) => String(r.job_id),
  },
  vms: { path: '/api/v1/vms', key: 'vms', idOf: (r) => String(r.vm_name) },
  repositories: { path: '/api/v1/repositories', key: 'repositories', idOf: (r) => String(r.id) },
  policies: { path: '/api/v1/policies', key: 'policies', idOf: (r) => String(r.id) },
};

let world: LedgerWorld;
let hub: TestHub;
let repositoryId: string;
const ids: Record<string, string[]> = {};
const base = Date.parse('2020-01-01T00:00:00.000Z');

/** Jobs of one type, newest first by index; every three share a created_at (ties by id). */
function jobs(jobType: 'backup' | 'replication', count: number, vmOf: (i: number) => string) {
  return Array.from({ length: count }, (_, i): BulkJob => ({
    id: `${jobType}-${uniqueName('')}-${i}`,
    jobType,
    vmName: vmOf(i),
    repositoryId,
    status: (['completed', 'failed', 'cancelled'] as const)[i % 3],
    createdAt: new Date(base - Math.floor(i / 3) * 1000),
    disks: [
      {
        diskKey: 'disk-0',
        source: `/var/lib/vms/${vmOf(i)}/disk-0.qcow2`,
        targetPath: `/srv/tidemark/${vmOf(i)}/${i}/disk-0.qcow2`,
      },
    ],
  }));
}

beforeAll(async () => {
  world = await createLedgerWorld();
  await world.startLedger();
  ({ repositoryId } = await seedReferences(world));
  hub = await startTestHub(world, { TIDEMARK_LOG_LEVEL: 'warn' });

  const backups = jobs('backup', JOBS_PER_TYPE, (i) => `vm-${i % 40}`);
  const replications = jobs('replication', JOBS_PER_TYPE, (i) => `vm-${i % 40}`);
  await insertJobs(world, [...backups, ...replications]);
  ids.backups = backups.map((j) => j.id);
  ids.replications = replications.map((j) => j.id);

  const vms = Array.from({ length: VMS }, (_, i) => ({
    vmName: `pv-${String(i).padStart(4, '0')}-${uniqueName('')}`,
    createdAt: new Date(base),
  }));
  await insertVms(world, vms);
  ids.vms = vms.map((v) => v.vmName);

  for (const [key, table] of [
    ['repositories', 'backup_repositories'],
    ['policies', 'backup_policies'],
  ] as const) {
    const rows = Array.from({ length: REGISTRY_ROWS }, (_, i) => ({
      id: `${key}-${uniqueName('')}`,
      name: uniqueName(`${key}-`),
      // Pairs share a created_at: ties are ordered by id.
      createdAt: new Date(base + Math.floor(i / 2) * 1000),
    }));
    await insertRegistry(world, table, rows);
    ids[key] = rows.map((r) => r.id);
  }
  // seedReferences made one repository and one policy through the ledger.
  ids.repositories.push(repositoryId);
  ids.policies.push(
    ...(await world.rows<{ id: string }>('SELECT id FROM backup_policies')).flatMap((r) =>
      ids.policies.includes(r.id) ? [] : [r.id],
    ),
  );
}, 120_000);

afterAll(async () => {
  await hub?.close();
  await world?.close();
});

/** Reads a list page by page; `between` runs after each page. */
async function pageThrough(
  route: ListRoute,
  query: Record<string, string>,
  between: (pageIndex: number) => Promise<void> = async () => {},
): Promise<{ rows: Row[]; pageSizes: number[] }> {
  const rows: Row[] = [];
  const pageSizes: number[] = [];
  let cursor: string | null = null;
  do {
    const params = new URLSearchParams(query);
    if (cursor !== null) params.set('cursor', cursor);
    const res = await hub.call<PageAnswer>('GET', `${route.path}?${params.toString()}`);
    expect({ status: res.status, body: res.status === 200 ? 'a page' : res.body }).toEqual({
      status: 200,
      body: 'a page',
    });
    const page = res.body[route.key] as Row[];
    pageSizes.push(page.length);
    rows.push(...page);
    cursor = res.body.next_cursor;
    await between(pageSizes.length);
    if (pageSizes.length > 1000) throw new Error(`${route.path}: no end after 1000 pages`);
  } while (cursor !== null);
  return { rows, pageSizes };
}

function expectEachOnce(route: ListRoute, rows: Row[], expected: string[]): void {
  const seen = rows.map(route.idOf);
  expect(seen.length).toBe(new Set(seen).size);
  expect([...seen].sort()).toEqual([...expected].sort());
}

describe.each(['backups', 'replications'] as const)('GET %s', (name) => {
  const route = routes[name];

  it(`pages through all ${JOBS_PER_TYPE} newest first, each row once, while new jobs arrive`, async () => {
    const arrived: string[] = [];
    const { rows, pageSizes } = await pageThrough(
      route,
      { limit: String(PAGE_LIMIT_MAX) },
      async (page) => {
        // Newer jobs written while the list is read land before the cursor: never on a page.
        if (page % 10 !== 1) return;
        const newer = jobs(name === 'backups' ? 'backup' : 'replication', 3, () => 'vm-new');
        for (const j of newer) j.createdAt = new Date(Date.now() + page);
        await insertJobs(world, newer);
        arrived.push(...newer.map((j) => j.id));
      },
    );
    expect(pageSizes.every((n) => n <= PAGE_LIMIT_MAX)).toBe(true);
    expect(pageSizes.length).toBe(JOBS_PER_TYPE / PAGE_LIMIT_MAX);
    expectEachOnce(route, rows, ids[name]);
    expect(arrived.length).toBeGreaterThan(0);
    const times = rows.map((r) => Date.parse(r.created_at));
    expect(times).toEqual([...times].sort((a, b) => b - a));
    // A job written meanwhile is there on a fresh read.
    const first = await hub.call<PageAnswer>('GET', `${route.path}?limit=${arrived.length}`);
    expect((first.body[route.key] as Row[]).map(route.idOf).sort()).toEqual(arrived.sort());
  });

  it('pages with the default limit, and with a filter', async () => {
    // vm-7 holds every 40th job of the type (125), a third of them failed.
    const ofVm = await pageThrough(route, { vm_name: 'vm-7' });
    expectEachOnce(
      route,
      ofVm.rows,
      ids[name].filter((_, i) => i % 40 === 7),
    );
    expect(ofVm.pageSizes).toEqual([PAGE_LIMIT_DEFAULT, PAGE_LIMIT_DEFAULT, 25]);

    const failed = await pageThrough(route, { vm_name: 'vm-7', status: 'failed', limit: '10' });
    expectEachOnce(
      route,
      failed.rows,
      ids[name].filter((_, i) => i % 40 === 7 && i % 3 === 1),
    );
    expect(failed.rows.every((r) => r.status === 'failed')).toBe(true);
    expect(failed.pageSizes.every((n) => n <= 10)).toBe(true);
  });
});

describe.each(['vms', 'repositories', 'policies'] as const)('GET %s', (name) => {
  const route = routes[name];

  it('pages through every row once, in a stable order', async () => {
    for (const limit of [PAGE_LIMIT_MAX, 33]) {
      const { rows, pageSizes } = await pageThrough(route, { limit: String(limit) });
      expect(pageSizes.every((n) => n <= limit)).toBe(true);
      expect(pageSizes.slice(0, -1).every((n) => n === limit)).toBe(true);
      expectEachOnce(route, rows, ids[name]);
    }
  });
});

describe('limits and cursors', () => {
  const lists = Object.values(routes);

  it.each(lists.map((r) => [r.path, r] as const))(
    '%s: a limit above the maximum is a 400 naming limit',
    async (_path, route) => {
      for (const limit of [PAGE_LIMIT_MAX + 1, 1000]) {
        const res = await hub.call<{ error: string; details: { path: string }[] }>(
          'GET',
          `${route.path}?limit=${limit}`,
        );
        expect(res.status).toBe(400);
        expect(res.body.details.map((d) => d.path)).toEqual(['querystring.limit']);
      }
      const zero = await hub.call<{ details: { path: string }[] }>('GET', `${route.path}?limit=0`);
      expect({ status: zero.status, paths: zero.body.details.map((d) => d.path) }).toEqual({
        status: 400,
        paths: ['querystring.limit'],
      });
    },
  );

  const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  it.each(lists.map((r) => [r.path, r] as const))(
    '%s: a cursor the list did not give is a 400 naming cursor',
    async (_path, route) => {
      const ofAnotherList =
        route.key === 'vms' ? b64(['jobs', '2026-01-01T00:00:00.000Z', 'x']) : b64(['vms', 'pg']);
      for (const cursor of ['not a cursor!', 'bm9wZQ', ofAnotherList, 'x'.repeat(600)]) {
        const res = await hub.call<{ error: string; details: { path: string }[] }>(
          'GET',
          `${route.path}?cursor=${encodeURIComponent(cursor)}`,
        );
        expect({ cursor, status: res.status, paths: res.body.details.map((d) => d.path) }).toEqual({
          cursor,
          status: 400,
          paths: ['querystring.cursor'],
        });
      }
    },
  );
});
