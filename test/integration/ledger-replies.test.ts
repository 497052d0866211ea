/**
 * Every reply of the ledger fits in one NATS message. The ledger runs as its own process, as in
 * production, so that an error escaping its handlers would end it (Node exits on an unhandled
 * rejection): an answer larger than the server's max_payload must come back as an error reply,
 * and the ledger must go on answering.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { ErrorCode, type TidemarkError } from '@tidemark/shared';
import { insertJobs, type BulkJob } from '../support/bulk-rows';
import { uniqueName, waitFor } from '../support/env';
import { createLedgerWorld, seedReferences, type LedgerWorld } from '../support/ledger-harness';

const ledgerMain = path.resolve(__dirname, '../../services/ledger/dist/main.js');

/** A path of about `length` characters under `root`. */
const longPath = (root: string, name: string, length: number) =>
  `${root}/${'d'.repeat(Math.max(1, length - root.length - name.length - 2))}/${name}`;

/** A job whose view is about `disks` × 3 × `pathLength` bytes. */
function fatJob(
  repositoryId: string,
  disks: number,
  pathLength: number,
  createdAt = new Date(),
): BulkJob {
  const id = uniqueName('backup-');
  return {
    id,
    jobType: 'backup',
    vmName: uniqueName('fat'),
    repositoryId,
    status: 'failed',
    createdAt,
    disks: Array.from({ length: disks }, (_, i) => ({
      diskKey: `disk-${i}`,
      source: longPath('/var/lib/vms', `disk-${i}.qcow2`, pathLength),
      targetPath: longPath(`/srv/tidemark/${id}`, `disk-${i}.qcow2`, pathLength),
      backingPath: longPath('/srv/tidemark/parent', `disk-${i}.qcow2`, pathLength),
    })),
  };
}

describe('ledger: replies bounded by the NATS max_payload', () => {
  let world: LedgerWorld;
  let child: ChildProcess | null = null;
  let childLog = '';
  let repositoryId: string;
  let maxPayload: number;

  beforeAll(async () => {
    world = await createLedgerWorld();
    // Schema and references from a ledger in this process; the ledger under test is a child.
    await world.startLedger();
    ({ repositoryId } = await seedReferences(world));
    await world.ledger?.stop();
    world.ledger = null;
    maxPayload = world.nc.info?.max_payload ?? 0;
    expect(maxPayload).toBeGreaterThan(0);

    child = spawn(process.execPath, [ledgerMain], {
      env: { ...process.env, ...world.env, TIDEMARK_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const stream of [child.stdout, child.stderr]) {
      stream?.on('data', (chunk: Buffer) => (childLog += chunk.toString('utf8')));
    }
    await waitFor('the ledger process to answer', async () => {
      await world.ask('repositories.get', { id: repositoryId });
      return true;
    });
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await world.close();
  });

  it('answers a job larger than max_payload with an error reply, and stays up', async () => {
    // 256 disks, three paths of ~4 KiB each: some 3 MiB of JSON, over the default 1 MiB.
    const job = fatJob(repositoryId, 256, 4000);
    await insertJobs(world, [job]);

    const err = (await world.ask('jobs.get', { jobId: job.id }).catch((e: unknown) => e)) as
      TidemarkError | undefined;
    expect({ code: err?.code, message: err?.message }).toEqual({
      code: ErrorCode.Internal,
      message: expect.stringMatching(
        new RegExp(
          `the answer to jobs.get is \\d+ bytes, more than the bus's max_payload of ${maxPayload}`,
        ),
      ),
    });
    // Still there, and still answering.
    expect({ exitCode: child?.exitCode, signal: child?.signalCode, log: childLog }).toMatchObject({
      exitCode: null,
      signal: null,
    });
    await expect(world.ask('repositories.get', { id: repositoryId })).resolves.toMatchObject({
      id: repositoryId,
    });
    expect(childLog).toMatch(/reply larger than max_payload/);
  });

  it('ends a page of large jobs early, within max_payload, and its cursor reads on', async () => {
    // 60 jobs of ~48 KiB each (four disks, three ~4 KiB paths): 50 of them would be ~2.4 MiB.
    const vmName = uniqueName('fat');
    const base = Date.parse('2022-03-01T00:00:00.000Z');
    const jobs = Array.from({ length: 60 }, (_, i) => ({
      ...fatJob(repositoryId, 4, 4000, new Date(base - i * 1000)),
      vmName,
    }));
    await insertJobs(world, jobs);

    const seen: string[] = [];
    const sizes: number[] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = await world.ask('jobs.list', { vmName, limit: 50, cursor });
      expect(Buffer.byteLength(JSON.stringify({ ok: true, result: page }))).toBeLessThanOrEqual(
        maxPayload,
      );
      sizes.push(page.items.length);
      seen.push(...page.items.map((j) => j.jobId));
      if (page.nextCursor === null) break;
      cursor = page.nextCursor;
    }
    expect(seen).toEqual(jobs.map((j) => j.id));
    expect(Math.max(...sizes)).toBeLessThan(50);
    expect(sizes.length).toBeGreaterThan(2);
    expect(child?.exitCode).toBeNull();
  });
});
