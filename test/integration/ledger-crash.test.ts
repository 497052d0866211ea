import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { uniqueName, waitFor } from '../support/env';
import {
  completedData,
  createLedgerWorld,
  seedReferences,
  startData,
  type LedgerWorld,
} from '../support/ledger-harness';

const ledgerMain = path.resolve(__dirname, '../../services/ledger/dist/main.js');

/** The ledger as its own process, as in production (built by `npm test`'s `tsc -b`). */
function spawnLedger(env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, [ledgerMain], {
    env: { ...process.env, ...env, TIDEMARK_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return child;
}

describe('ledger: SIGKILL while events are being published', () => {
  let world: LedgerWorld;
  let child: ChildProcess | null = null;

  beforeAll(async () => {
    world = await createLedgerWorld();
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await world.close();
  });

  it('applies every event published meanwhile after restart, none lost and none twice', async () => {
    // References come from a ledger run in this process; then the ledger under test is a child.
    await world.startLedger();
    const refs = await seedReferences(world);
    await world.ledger?.stop();
    world.ledger = null;

    child = spawnLedger(world.env);
    await waitFor('the ledger process to pull', async () => {
      const info = await world.jsm.consumers.info(world.topo.stream, world.topo.ledgerConsumer);
      return info.num_waiting > 0;
    });
    const jobs = 300;
    const published: string[] = [];
    // Progress is guarded by its per-job sequence, every other event by its id row.
    const recorded: string[] = [];
    const jobIds: string[] = [];
    // The publisher runs on its own while the ledger is killed under it.
    const publisher = (async () => {
      for (let i = 0; i < jobs; i++) {
        const jobId = uniqueName('backup-');
        const vm = `vm-${i}`;
        jobIds.push(jobId);
        const events = [
          await world.publish(
            'backup.start',
            jobId,
            startData(refs.repositoryId, vm, ['disk-0', 'disk-1']),
          ),
          await world.publish('backup.progress', jobId, {
            phase: 'copying',
            sequence: 1,
            bytesPerSecond: 1,
            disks: [{ diskKey: 'disk-0', bytesDone: 1, bytesTotal: 2 }],
          }),
          await world.publish(
            'backup.completed',
            jobId,
            completedData(refs.repositoryId, vm, [
              { diskKey: 'disk-0', changeId: `${jobId}-0/1`, bytesTransferred: 1 },
              { diskKey: 'disk-1', changeId: `${jobId}-1/1`, bytesTransferred: 2 },
            ]),
          ),
        ];
        published.push(...events.map((e) => e.id));
        recorded.push(...events.filter((e) => e.type !== 'backup.progress').map((e) => e.id));
        await new Promise((r) => setTimeout(r, 2)); // a steady stream, not one burst
      }
    })();
    await waitFor(
      'some events applied',
      async () => (await world.count('SELECT COUNT(*) FROM processed_events')) > 100,
      30000,
      5,
    );
    child.kill('SIGKILL');
    await once(child, 'exit');
    const killed = published.length < jobs * 3;
    await publisher;
    expect(killed).toBe(true);
    const appliedBeforeRestart = await world.count('SELECT COUNT(*) FROM processed_events');
    expect(appliedBeforeRestart).toBeLessThan(recorded.length); // the rest arrived while the ledger was dead

    child = spawnLedger(world.env);
    await waitFor(
      'every event applied',
      async () => {
        return (await world.count('SELECT COUNT(*) FROM processed_events')) >= recorded.length;
      },
      60000,
    );
    await world.drained(30000);

    const processed = await world.rows<{ event_id: string }>(
      'SELECT event_id FROM processed_events',
    );
    expect(processed.map((r) => r.event_id).sort()).toEqual([...recorded].sort());
    const completed = await world.rows<{ id: string }>(
      "SELECT id FROM backup_jobs WHERE status = 'completed'",
    );
    expect(completed.map((r) => r.id).sort()).toEqual([...jobIds].sort());
    const disks = await world.rows<{ job_id: string; disk_key: string; change_id: string }>(
      'SELECT job_id, disk_key, change_id FROM backup_disks',
    );
    expect(disks).toHaveLength(jobs * 2);
    for (const d of disks) expect(d.change_id).toBe(`${d.job_id}-${d.disk_key.slice(-1)}/1`);
    expect(await world.deadLetters()).toEqual([]);
  }, 120000);
});
