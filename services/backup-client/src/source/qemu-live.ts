import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ClientError } from '../errors';
import type { NbdClient } from '../nbd/index';
import { createQcow2 } from '../qemu/image';
import { QmpClient, QmpError } from '../qmp/client';
import { formatChangeId, rotationFor, type TrackedBitmap } from './change-id';
import { connectWithRetry, queryAreas } from './nbd-areas';
import { isLiveSource, parseLiveSource, type LiveSource } from './source-paths';
import type { Area, ChainHead, SourceDriver, SourceSnapshot } from './types';

interface NodeInfo {
  'node-name': string;
  image?: { 'virtual-size'?: number; format?: string };
  'dirty-bitmaps'?: Array<{
    name: string;
    persistent?: boolean;
    recording?: boolean;
    busy?: boolean;
    inconsistent?: boolean;
  }>;
}

/**
 * The part of every object name a job's client makes in a daemon (export, backup job, fleece
 * node) that says whose it is: 8 hex digits of sha256(job id). A later attempt of the job, or
 * the runner's cleanup after a client that died, finds and removes what it left by this.
 */
export function ownerTag(jobId: string): string {
  return createHash('sha256').update(jobId).digest('hex').slice(0, 8);
}

const names = {
  export: (tag: string) => `tidemark-export-${tag}`,
  job: (tag: string) => `tidemark-backup-${tag}`,
  fleece: (tag: string) => `tidemark-fleece-${tag}`,
};

interface NodeEntry {
  'node-name': string;
  image?: { filename?: string };
}

/**
 * Removes from the daemon every export, backup job and fleece node (and its overlay file) that
 * a client of `owner` left, in the order qemu needs: a client killed before its teardown (by
 * SIGKILL, or a crash) leaves them holding the disk's bitmap and the overlay growing. Returns
 * what it removed. Objects of other jobs (the other chain's job on the same disk) stay.
 */
export async function removeLeftovers(qmp: QmpClient, owner: string): Promise<string[]> {
  const mine = (name: (t: string) => string, id: string | undefined) =>
    id !== undefined && id.startsWith(`${name(owner)}-`);
  const removed: string[] = [];
  const exports = await qmp.execute<Array<{ id: string }>>('query-block-exports');
  for (const e of exports.filter((x) => mine(names.export, x.id))) {
    const gone = qmp.waitForEvent(
      'BLOCK_EXPORT_DELETED',
      (ev) => (ev.data as { id?: string }).id === e.id,
      10_000,
    );
    await qmp.execute('block-export-del', { id: e.id, mode: 'hard' });
    await gone;
    removed.push(`export ${e.id}`);
  }
  const jobs = await qmp.execute<Array<{ device: string }>>('query-block-jobs');
  for (const j of jobs.filter((x) => mine(names.job, x.device))) {
    const gone = qmp.waitForEvent(
      'JOB_STATUS_CHANGE',
      (ev) => {
        const d = ev.data as { id?: string; status?: string };
        return d.id === j.device && d.status === 'null';
      },
      10_000,
    );
    await qmp.execute('block-job-cancel', { device: j.device, force: true });
    await gone;
    removed.push(`block job ${j.device}`);
  }
  const nodes = await qmp.execute<NodeEntry[]>('query-named-block-nodes', { flat: true });
  for (const n of nodes.filter((x) => mine(names.fleece, x['node-name']))) {
    await qmp.execute('blockdev-del', { 'node-name': n['node-name'] });
    const file = n.image?.filename;
    // Only an overlay the client made (named fleece-<tag>.qcow2), never anything else.
    if (file && basename(file).startsWith('fleece-') && file.endsWith('.qcow2'))
      await rm(file, { force: true });
    removed.push(`node ${n['node-name']}`);
  }
  return removed;
}

/** How long a client waits for a daemon's monitor that another client holds. */
const MONITOR_WAIT_MS = 120_000;

/**
 * Connects to a daemon's QMP monitor, which serves one client at a time: while another holds it
 * (the other chain's job on the same disk, briefly) the handshake does not come, so it tries
 * again, for up to `MONITOR_WAIT_MS`. A socket that is not there fails at once.
 */
async function connectMonitor(source: string, qmpSocket: string): Promise<QmpClient> {
  const deadline = Date.now() + MONITOR_WAIT_MS;
  for (;;) {
    try {
      return await QmpClient.connect(qmpSocket);
    } catch (err) {
      const busy = err instanceof QmpError && err.errorClass === 'Timeout';
      if (!busy || Date.now() > deadline)
        throw qmpFailure(source, 'cannot reach the QMP monitor', err);
    }
  }
}

/** `removeLeftovers` on the daemon of a `qemu-live:` source. */
export async function removeLeftoversAt(source: string, owner: string): Promise<string[]> {
  const live = parseLiveSource(source);
  const qmp = await connectMonitor(source, live.qmpSocket);
  try {
    return await removeLeftovers(qmp, owner);
  } finally {
    await qmp.close().catch(() => undefined);
  }
}

function qmpFailure(source: string, what: string, err: unknown): ClientError {
  const detail = err instanceof QmpError ? `${err.errorClass}: ${err.desc}` : String(err);
  return new ClientError('SOURCE_UNAVAILABLE', `source ${source}: ${what}: ${detail}`, true, {
    cause: err,
  });
}

/**
 * The `qemu` driver for a running disk served by qemu-storage-daemon. One QMP transaction adds
 * the new persistent bitmap, disables the previous one and starts `blockdev-backup sync=none`
 * into a temporary fleece overlay: the overlay keeps the old data of every block the guest
 * overwrites, so reading it (backed by the live disk) is the point in time of the transaction.
 */
export class QemuLiveDriver implements SourceDriver {
  readonly name = 'qemu-live';

  accepts(source: string): boolean {
    return isLiveSource(source);
  }

  async open(
    source: string,
    previousChangeId: string | null,
    workDir: string,
    chain: string,
    chainHeads: ChainHead[] = [],
    owner = ownerTag(''),
  ): Promise<SourceSnapshot> {
    const live = parseLiveSource(source);
    const qmp = await connectMonitor(source, live.qmpSocket);
    const snapshot = new LiveSnapshot(source, live, qmp, workDir, owner);
    try {
      // What an earlier attempt of this job left (its client killed mid-teardown) goes first:
      // its backup job would hold the chain's bitmap busy.
      await removeLeftovers(qmp, owner);
      await snapshot.start(previousChangeId, chain, chainHeads);
      // The monitor serves one client at a time: held for the whole copy, it would stall the
      // other chain's job on this disk. The export, job and overlay live on without it.
      await snapshot.releaseMonitor();
      return snapshot;
    } catch (err) {
      await snapshot.close();
      if (err instanceof ClientError) throw err;
      throw qmpFailure(source, 'cannot take the point in time', err);
    }
  }
}

class LiveSnapshot implements SourceSnapshot {
  size = 0;
  changeId = '';
  baseChangeId: string | null = null;
  private base: TrackedBitmap | null = null;
  private stale: string[] = [];
  /** `<owner>-<random>`: whose the objects are, and which run of the job made them. */
  private readonly tag: string;
  private readonly fleeceNode: string;
  private readonly jobId: string;
  private readonly exportId: string;
  private readonly fleecePath: string;
  private nbdSocket: string;
  private startedServer = false;
  private made = { fleece: false, job: false, export: false };
  private readonly clients: NbdClient[] = [];
  private areasClient: NbdClient | undefined;
  private tornDown = false;
  /** The monitor connection while one is open (at start, and again at teardown). */
  private held: QmpClient | null;

  /** The open monitor connection (start and teardown hold one). */
  private get qmp(): QmpClient {
    if (!this.held) throw new Error('no QMP connection held');
    return this.held;
  }

  /** Lets the monitor go; `teardown` and `commit` connect again. */
  async releaseMonitor(): Promise<void> {
    const held = this.held;
    this.held = null;
    await held?.close().catch(() => undefined);
  }

  private async reconnect(): Promise<void> {
    this.held ??= await connectMonitor(this.source, this.live.qmpSocket);
  }

  constructor(
    private readonly source: string,
    private readonly live: LiveSource,
    qmp: QmpClient,
    workDir: string,
    owner: string,
  ) {
    this.held = qmp;
    // 29 characters at most: qemu's node names stop at 31.
    this.tag = `${owner}-${randomBytes(2).toString('hex')}`;
    this.fleeceNode = names.fleece(this.tag);
    this.jobId = names.job(this.tag);
    this.exportId = names.export(this.tag);
    this.fleecePath = join(workDir, `fleece-${this.tag}.qcow2`);
    this.nbdSocket = live.nbdSocket ?? join(workDir, `live-${this.tag}.sock`);
  }

  private async node(): Promise<NodeInfo> {
    const nodes = await this.qmp.execute<NodeInfo[]>('query-named-block-nodes', { flat: true });
    const node = nodes.find((n) => n['node-name'] === this.live.node);
    if (!node)
      throw new ClientError(
        'SOURCE_UNAVAILABLE',
        `source ${this.source}: the daemon has no block node "${this.live.node}"`,
        false,
      );
    return node;
  }

  async start(
    previousChangeId: string | null,
    chain: string,
    chainHeads: ChainHead[],
  ): Promise<void> {
    const node = await this.node();
    if (node.image?.format !== 'qcow2')
      throw new ClientError(
        'SOURCE_UNAVAILABLE',
        `source ${this.source}: node "${this.live.node}" is ${node.image?.format ?? 'not an image'}; persistent bitmaps need a qcow2 node`,
        false,
      );
    this.size = node.image['virtual-size'] ?? 0;
    const plan = rotationFor(
      this.source,
      (node['dirty-bitmaps'] ?? [])
        .filter((b) => b.persistent)
        .map((b) => ({ name: b.name, inconsistent: !!b.inconsistent })),
      previousChangeId,
      chain,
      chainHeads,
    );
    const nodeName = this.live.node;
    if (plan.base && plan.mergeIntoBase.length > 0) {
      // A failed job left newer bitmaps: fold them into the base (never an empty merge list:
      // qemu 7.2 crashes on it).
      await this.qmp.execute('transaction', {
        actions: [
          {
            type: 'block-dirty-bitmap-merge',
            data: {
              node: nodeName,
              target: plan.base.name,
              bitmaps: plan.mergeIntoBase.map((b) => b.name),
            },
          },
          ...plan.mergeIntoBase.map((b) => ({
            type: 'block-dirty-bitmap-remove',
            data: { node: nodeName, name: b.name },
          })),
        ],
      });
    }
    const next = plan.nextName;
    this.base = plan.base;
    this.stale = plan.stale.map((b) => b.name);
    this.changeId = formatChangeId(plan.next);
    this.baseChangeId = plan.base ? formatChangeId(plan.base.id) : null;

    await createQcow2(this.fleecePath, this.size);
    await this.qmp.execute('blockdev-add', {
      driver: 'qcow2',
      'node-name': this.fleeceNode,
      file: { driver: 'file', filename: this.fleecePath },
      backing: nodeName,
    });
    this.made.fleece = true;
    await this.qmp.execute('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-add', data: { node: nodeName, name: next, persistent: true } },
        ...(plan.base
          ? [{ type: 'block-dirty-bitmap-disable', data: { node: nodeName, name: plan.base.name } }]
          : []),
        {
          type: 'blockdev-backup',
          data: { device: nodeName, target: this.fleeceNode, sync: 'none', 'job-id': this.jobId },
        },
      ],
    });
    this.made.job = true;
    if (!this.live.nbdSocket) {
      await this.qmp
        .execute('nbd-server-start', { addr: { type: 'unix', data: { path: this.nbdSocket } } })
        .catch((err: unknown) => {
          if (err instanceof QmpError && /already running/.test(err.desc))
            throw new ClientError(
              'SOURCE_UNAVAILABLE',
              `source ${this.source}: the daemon already runs an NBD server; name its unix socket with &nbd=<path>`,
              false,
            );
          throw err;
        });
      this.startedServer = true;
    }
    await this.qmp.execute('block-export-add', {
      type: 'nbd',
      id: this.exportId,
      'node-name': this.fleeceNode,
      name: this.exportId,
      writable: false,
      ...(plan.base ? { bitmaps: [plan.base.name] } : {}),
    });
    this.made.export = true;
  }

  async openReader(): Promise<NbdClient> {
    const c = await connectWithRetry(
      { path: this.nbdSocket },
      { exportName: this.exportId, metaContexts: ['base:allocation'] },
    );
    this.clients.push(c);
    return c;
  }

  async queryChangedDiskAreas(offset: number): Promise<{ areas: Area[]; covered: number }> {
    const context = this.base ? `qemu:dirty-bitmap:${this.base.name}` : 'base:allocation';
    if (!this.areasClient) {
      this.areasClient = await connectWithRetry(
        { path: this.nbdSocket },
        { exportName: this.exportId, metaContexts: [context] },
      );
      this.clients.push(this.areasClient);
    }
    return queryAreas(this.areasClient, context, offset);
  }

  /** Ends the export, the backup job and the fleece overlay, in the order qemu requires. */
  private async teardown(): Promise<void> {
    if (this.tornDown) return;
    this.tornDown = true;
    await Promise.allSettled(this.clients.map((c) => c.disconnect()));
    if (this.made.fleece || this.made.export || this.made.job || this.startedServer)
      await this.reconnect();
    const steps: Array<() => Promise<unknown>> = [];
    if (this.made.export)
      steps.push(async () => {
        const gone = this.qmp.waitForEvent(
          'BLOCK_EXPORT_DELETED',
          (ev) => (ev.data as { id?: string }).id === this.exportId,
          10_000,
        );
        await this.qmp.execute('block-export-del', { id: this.exportId, mode: 'hard' });
        await gone;
      });
    if (this.startedServer) steps.push(() => this.qmp.execute('nbd-server-stop'));
    if (this.made.job)
      steps.push(async () => {
        const gone = this.qmp.waitForEvent(
          'JOB_STATUS_CHANGE',
          (ev) => {
            const d = ev.data as { id?: string; status?: string };
            return d.id === this.jobId && d.status === 'null';
          },
          10_000,
        );
        await this.qmp.execute('block-job-cancel', { device: this.jobId, force: true });
        await gone;
      });
    if (this.made.fleece)
      steps.push(() => this.qmp.execute('blockdev-del', { 'node-name': this.fleeceNode }));
    const errors: unknown[] = [];
    for (const step of steps) await step().catch((err: unknown) => errors.push(err));
    await rm(this.fleecePath, { force: true });
    if (this.startedServer) await rm(this.nbdSocket, { force: true });
    if (errors.length > 0)
      throw qmpFailure(this.source, 'tearing down the point in time', errors[0]);
  }

  async commit(): Promise<void> {
    try {
      await this.teardown();
      if (this.stale.length > 0) await this.reconnect();
      // Each one on its own: one that cannot go must not keep the others.
      const failed: unknown[] = [];
      for (const name of this.stale)
        await this.qmp
          .execute('block-dirty-bitmap-remove', { node: this.live.node, name })
          .catch((err: unknown) => failed.push(err));
      if (failed.length > 0) throw failed[0];
    } finally {
      await this.disconnect();
    }
  }

  async close(): Promise<void> {
    try {
      await this.teardown();
    } finally {
      await this.disconnect();
    }
  }

  private async disconnect(): Promise<void> {
    await this.releaseMonitor();
  }
}
