import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { busTopology, makeEvent, type AnyEvent } from '@tidemark/shared';
import { parentPort, workerData } from 'node:worker_threads';

/**
 * The benchmark's publisher, on its own thread (and so its own core) so that it does not take
 * CPU from the ledger it measures. Publishes each job's start, 5 progress events and completion,
 * keeping `inFlight` publishes outstanding, optionally paced to `eventsPerSecond`.
 */
export interface PublisherInput {
  natsUrl: string;
  prefix: string;
  repositoryId: string;
  jobs: number;
  inFlight: number;
  /** 0: as fast as the server acknowledges. */
  eventsPerSecond: number;
  runId: string;
}

export interface PublisherOutput {
  published: number;
  /** Absolute time (ms, high resolution) each completed event was handed to the client. */
  completedAt: Record<string, number>;
  firstAt: number;
  lastAckAt: number;
}

const now = () => performance.timeOrigin + performance.now();

function jobEvents(input: PublisherInput, i: number): AnyEvent[] {
  const jobId = `bench-${input.runId}-${i}`;
  const vmName = `bench-vm-${input.runId}-${i}`;
  const targetPath = `/srv/tidemark/${vmName}/${jobId}/disk-0.qcow2`;
  const events: AnyEvent[] = [
    makeEvent('backup.start', {
      jobId,
      jobType: i % 5 === 0 ? 'replication' : 'backup',
      data: {
        vmName,
        backupType: 'full',
        repositoryId: input.repositoryId,
        disks: [{ diskKey: 'disk-0', source: `/var/lib/vms/${vmName}.qcow2`, targetPath }],
      },
    }) as AnyEvent,
  ];
  for (let s = 1; s <= 5; s++) {
    events.push(
      makeEvent('backup.progress', {
        jobId,
        jobType: events[0].jobType,
        data: {
          phase: 'copying',
          sequence: s,
          bytesPerSecond: 3e8,
          disks: [{ diskKey: 'disk-0', bytesDone: s * 1e9, bytesTotal: 5e9 }],
        },
      }) as AnyEvent,
    );
  }
  events.push(
    makeEvent('backup.completed', {
      jobId,
      jobType: events[0].jobType,
      data: {
        vmName,
        backupType: 'full',
        repositoryId: input.repositoryId,
        bytesTransferred: 5e9,
        disks: [
          {
            diskKey: 'disk-0',
            changeId: `52 66 8c 2d a7 c5 c5 68-c5 d2 8d 04 79 f5 fd 7d/${i}`,
            bytesTransferred: 5e9,
            targetPath,
          },
        ],
      },
    }) as AnyEvent,
  );
  return events;
}

async function main(input: PublisherInput): Promise<PublisherOutput> {
  const nc = await connect({ servers: input.natsUrl });
  const js = jetstream(nc);
  const topo = busTopology(input.prefix);
  // Interleave jobs the way real runners do: several jobs at once, each in order.
  const lanes = 50;
  const queue: AnyEvent[] = [];
  for (let base = 0; base < input.jobs; base += lanes) {
    const group = [];
    for (let i = base; i < Math.min(base + lanes, input.jobs); i++) group.push(jobEvents(input, i));
    for (let step = 0; step < 7; step++) for (const events of group) queue.push(events[step]);
  }
  // Encoded before the clock starts: the publisher should spend its CPU on publishing.
  const encoded = queue.map((e) => ({
    subject: topo.subjectFor(e.type),
    body: new TextEncoder().encode(JSON.stringify(e)),
  }));
  const completedAt: Record<string, number> = {};
  const firstAt = now();
  let lastAckAt = firstAt;
  async function publishOne(index: number): Promise<void> {
    const event = queue[index];
    const at = now();
    if (event.type === 'backup.completed') completedAt[event.id] = at;
    const ack = await js.publish(encoded[index].subject, encoded[index].body, { msgID: event.id });
    if (ack.duplicate) throw new Error(`event ${event.id} was a duplicate`);
    lastAckAt = now();
  }
  if (input.eventsPerSecond > 0) {
    // Paced: every 10 ms, hand over the events due by then (like many runners reporting at
    // once), keeping at most `inFlight` publishes outstanding.
    const pending = new Set<Promise<void>>();
    let next = 0;
    while (next < queue.length) {
      const due = Math.min(
        queue.length,
        Math.floor(((now() - firstAt) * input.eventsPerSecond) / 1000) + 1,
      );
      while (next < due) {
        const p: Promise<void> = publishOne(next++).finally(() => pending.delete(p));
        pending.add(p);
        if (pending.size >= input.inFlight) await Promise.race(pending);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(pending);
  } else {
    let next = 0;
    const lane = async () => {
      while (next < queue.length) await publishOne(next++);
    };
    await Promise.all(Array.from({ length: input.inFlight }, lane));
  }
  await nc.drain();
  return { published: queue.length, completedAt, firstAt, lastAckAt };
}

if (parentPort) {
  main(workerData as PublisherInput).then(
    (out) => parentPort?.postMessage({ ok: true, out }),
    (err) => parentPort?.postMessage({ ok: false, error: String(err) }),
  );
}
