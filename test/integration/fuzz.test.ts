/**
 * Fuzzing with real servers: ≥ 10,000 malformed events published straight onto the bus, and
 * ≥ 1,000 malformed REST requests to the hub. Nothing may crash, every event must end as a dead
 * letter with a reason, every request must be answered 4xx naming a field. The counts go to
 * test/results/fuzz.json. TIDEMARK_FUZZ_SEED replays a run (the seed is printed).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeliverPolicy } from '@nats-io/jetstream';
import { api, makeEvent, parseEvent, type EventType } from '@tidemark/shared';
import type { z } from 'zod';
import { fuzzRandom, mutate, type Json } from '../support/fuzz';
import { registerVm, startTestHub, type TestHub } from '../support/hub-harness';
import {
  completedData,
  createLedgerWorld,
  seedReferences,
  startData,
  type LedgerWorld,
} from '../support/ledger-harness';
import { uniqueName } from '../support/env';

const {
  CancelJobBody,
  CompleteBackupBody,
  CreatePolicyBody,
  CreateRepositoryBody,
  CreateVmBody,
  ReplicationChangeIdBody,
  StartJobBody,
} = api;

jest.setTimeout(300_000);

const EVENTS = Number(process.env.TIDEMARK_FUZZ_EVENTS ?? 10_000);
const REQUESTS = Number(process.env.TIDEMARK_FUZZ_REQUESTS ?? 1_000);
const seed = Number(process.env.TIDEMARK_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const resultsFile = join(__dirname, '..', 'results', 'fuzz.json');

let world: LedgerWorld;
let hub: TestHub;
let repositoryId: string;
const results: Record<string, unknown> = { seed };

beforeAll(async () => {
  process.stdout.write(`fuzz seed ${seed} (TIDEMARK_FUZZ_SEED=${seed} replays it)\n`);
  world = await createLedgerWorld();
  await world.startLedger();
  ({ repositoryId } = await seedReferences(world));
  hub = await startTestHub(world, { TIDEMARK_LOG_LEVEL: 'silent' });
});

afterAll(async () => {
  await hub?.close();
  await world?.close();
  mkdirSync(join(resultsFile, '..'), { recursive: true });
  writeFileSync(resultsFile, `${JSON.stringify(results, null, 2)}\n`);
});

/** Counts by the first words of a label: `array at data.disks.0` → `array at data`. */
function tally(map: Record<string, number>, label: string): void {
  const key = label.replace(/(\.[^ ]*)$/, '').replace(/\d+/g, 'N');
  map[key] = (map[key] ?? 0) + 1;
}

describe('fuzz', () => {
  it(`dead-letters every one of ${EVENTS} malformed events with a reason, and crashes nothing`, async () => {
    const random = fuzzRandom(seed);
    const vm = uniqueName('vm');
    const templates: Array<{ type: EventType; doc: Json }> = [
      makeEvent('backup.start', {
        jobId: 'job-f1',
        jobType: 'backup',
        data: startData(repositoryId, vm),
      }),
      makeEvent('backup.progress', {
        jobId: 'job-f1',
        jobType: 'replication',
        data: {
          phase: 'copying',
          sequence: 3,
          bytesPerSecond: 10,
          disks: [{ diskKey: 'disk-2000', bytesDone: 5, bytesTotal: 10 }],
        },
      }),
      makeEvent('backup.completed', {
        jobId: 'job-f1',
        jobType: 'backup',
        data: completedData(repositoryId, vm, [
          { diskKey: 'disk-2000', changeId: 'uuid/1', bytesTransferred: 10, bytesTotal: 10 },
        ]),
      }),
      makeEvent('backup.failed', {
        jobId: 'job-f1',
        jobType: 'backup',
        data: { code: 'COPY_FAILED', message: 'm', retryable: true, vmName: vm },
      }),
      makeEvent('backup.cancel', { jobId: 'job-f1', jobType: 'backup', data: { reason: 'r' } }),
    ].map((e) => ({ type: e.type, doc: e as unknown as Json }));

    const byMutation: Record<string, number> = {};
    // From the first publish to the last dead letter read (test/results/fuzz.json keeps it).
    const began = Date.now();
    let skippedValid = 0;
    let sent = 0;
    while (sent < EVENTS) {
      const batch: Promise<unknown>[] = [];
      for (let i = 0; i < 250 && sent < EVENTS; i++) {
        const t = templates[Math.floor(random() * templates.length)] as (typeof templates)[number];
        const m =
          random() < 0.05
            ? {
                mutation: random() < 0.5 ? 'unknown version' : 'unknown type',
                body: Buffer.from(
                  JSON.stringify({
                    ...(t.doc as Record<string, Json>),
                    ...(random() < 0.5
                      ? { version: 2 + Math.floor(random() * 100) }
                      : { type: 'backup.unknown' }),
                  }),
                ),
              }
            : mutate(t.doc, random);
        if (parseEvent(m.body).ok) {
          skippedValid++; // a mutation that left the event valid is not a malformed event
          continue;
        }
        tally(byMutation, m.mutation);
        sent++;
        batch.push(
          world.js.publish(world.topo.subjectFor(t.type), m.body, { msgID: randomUUID() }),
        );
      }
      await Promise.all(batch);
    }

    // Every one comes out on the dead-letter stream, with a reason and the failing fields.
    const dead = await world.js.consumers.get(world.topo.deadStream, {
      deliver_policy: DeliverPolicy.All,
    });
    const byReason: Record<string, number> = {};
    let deadLettered = 0;
    let withoutReason = 0;
    const messages = await dead.consume();
    const deadline = setTimeout(() => void messages.close(), 240_000);
    for await (const msg of messages) {
      const letter = msg.json<{ reason: string; issues: Array<{ path: string }> }>();
      deadLettered++;
      if (!letter.reason || letter.issues.length === 0) withoutReason++;
      tally(byReason, letter.reason.split(':')[0] as string);
      if (deadLettered >= sent) break;
    }
    clearTimeout(deadline);
    const deadLetteredMs = Date.now() - began;
    await world.drained(60_000);

    // The ledger is alive and still applies a valid event.
    const jobId = uniqueName('job-');
    const validAt = Date.now();
    await world.publish('backup.start', jobId, startData(repositoryId, uniqueName('vm')));
    await world.waitForJob(jobId, (r) => r.status === 'queued', 15_000);
    const validStartMs = Date.now() - validAt;
    process.stdout.write(
      `fuzz timings: all dead-lettered after ${deadLetteredMs} ms, valid start applied ${validStartMs} ms after publishing\n`,
    );

    results.events = {
      sent,
      deadLettered,
      unexplained: sent - deadLettered,
      withoutReason,
      skippedBecauseStillValid: skippedValid,
      crashes: 0,
      deadLetteredMs,
      validStartMs,
      byMutation,
      byReason,
    };
    expect(sent).toBeGreaterThanOrEqual(EVENTS);
    expect({ deadLettered, withoutReason }).toEqual({ deadLettered: sent, withoutReason: 0 });
  });

  it(`answers each of ${REQUESTS} malformed requests 4xx naming a field, and crashes nothing`, async () => {
    const random = fuzzRandom(seed + 1);
    const vmName = await registerVm(hub, ['disk-0']);
    const started = await hub.call<{ backup_id: string }>('POST', '/api/v1/backups', {
      vm_name: vmName,
      repository_id: repositoryId,
      backup_type: 'full',
    });
    const jobId = started.body.backup_id;
    const routes: Array<{ path: string; schema: z.ZodType; valid: Json }> = [
      {
        path: '/api/v1/vms',
        schema: CreateVmBody,
        valid: {
          vm_name: 'vm-x',
          disks: [{ disk_key: 'disk-0', driver: 'qemu', path: '/d.qcow2' }],
        },
      },
      {
        path: '/api/v1/repositories',
        schema: CreateRepositoryBody,
        valid: { name: 'r', path: '/srv/r' },
      },
      {
        path: '/api/v1/policies',
        schema: CreatePolicyBody,
        valid: { name: 'p', schedule: '0 2 * * *', retention_count: 7 },
      },
      {
        path: '/api/v1/backups',
        schema: StartJobBody,
        valid: { vm_name: vmName, repository_id: repositoryId, backup_type: 'full' },
      },
      {
        path: '/api/v1/replications',
        schema: StartJobBody,
        valid: { vm_name: vmName, repository_id: repositoryId, backup_type: 'auto' },
      },
      { path: `/api/v1/backups/${jobId}/cancel`, schema: CancelJobBody, valid: { reason: 'r' } },
      {
        path: `/api/v1/backups/${jobId}/complete`,
        schema: CompleteBackupBody,
        valid: { change_id: 'u/1', bytes_transferred: 1 },
      },
      {
        path: `/api/v1/replications/${jobId}/changeid`,
        schema: ReplicationChangeIdBody,
        valid: { change_id: 'u/1' },
      },
    ];
    const byStatus: Record<string, number> = {};
    const notNamingAField: string[] = [];
    let sent = 0;
    while (sent < REQUESTS) {
      const batch: Promise<void>[] = [];
      for (let i = 0; i < 20 && sent < REQUESTS; i++) {
        const route = routes[Math.floor(random() * routes.length)] as (typeof routes)[number];
        const m = mutate(route.valid, random);
        let parsed: unknown;
        try {
          parsed = JSON.parse(m.body.toString('utf8'));
          if (route.schema.safeParse(parsed).success) continue; // still valid: not a fuzz case
        } catch {
          // not JSON: a malformed request
        }
        sent++;
        batch.push(
          hub
            .call<{ error?: string; details?: Array<{ path: unknown }> }>(
              'POST',
              route.path,
              undefined,
              {
                rawBody: m.body.toString('latin1'),
              },
            )
            .then((res) => {
              byStatus[res.status] = (byStatus[res.status] ?? 0) + 1;
              const named =
                typeof res.body?.error === 'string' &&
                (res.body.details ?? []).some((d) => typeof d.path === 'string');
              if (res.status < 400 || res.status >= 500 || !named)
                notNamingAField.push(
                  `${route.path} ${m.mutation} → ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`,
                );
            }),
        );
      }
      await Promise.all(batch);
    }
    expect((await hub.call('GET', '/healthz')).status).toBe(200);
    results.requests = {
      sent,
      answered4xxNamingAField: sent - notNamingAField.length,
      other: notNamingAField.length,
      crashes: 0,
      byStatus,
    };
    expect(notNamingAField).toEqual([]);
    expect(sent).toBeGreaterThanOrEqual(REQUESTS);
  });
});
