import { NbdClient, type NbdAddress } from '../nbd/index';
import { ClientError } from '../errors';
import { bitmap, imageInfo, mergeBitmap, serveImage, type NbdExport } from '../qemu/image';
import { ToolError } from '../qemu/process';
import { formatChangeId, rotationFor, type QemuChangeId, type TrackedBitmap } from './change-id';
import type { Area, ChainHead, SourceDriver, SourceSnapshot } from './types';
import { connectWithRetry, queryAreas } from './nbd-areas';
import { isImageSource } from './source-paths';

/**
 * Runs a qemu-img step, retrying for up to `ms` while the image is locked: the client of the
 * previous job may still be removing its old bitmap for a moment after its result is recorded.
 * A disk that stays locked (a running VM) fails after that.
 */
async function whileLocked<T>(step: () => Promise<T>, ms = 3000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await step();
    } catch (err) {
      if (!(err instanceof ToolError && /lock/i.test(err.stderr)) || Date.now() > deadline)
        throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function sourceError(source: string, err: unknown): ClientError {
  const detail = err instanceof ToolError ? err.stderr.trim() : String(err);
  const locked = /lock/i.test(detail);
  return new ClientError(
    'SOURCE_UNAVAILABLE',
    `source ${source}: ${detail}${locked ? ' (the image is open elsewhere; a running disk needs the qemu-live driver)' : ''}`,
    locked,
    { cause: err },
  );
}

/**
 * The `qemu` driver for an offline QCOW2 image (not open by any other process). Change
 * tracking is a persistent dirty bitmap per change_id, rotated with `qemu-img bitmap`; the
 * point-in-time view is a read-only `qemu-nbd` export carrying the previous bitmap.
 */
export class QemuImageDriver implements SourceDriver {
  readonly name = 'qemu';

  accepts(source: string): boolean {
    return isImageSource(source);
  }

  async open(
    source: string,
    previousChangeId: string | null,
    workDir: string,
    chain: string,
    chainHeads: ChainHead[] = [],
  ): Promise<SourceSnapshot> {
    const info = await whileLocked(() => imageInfo(source)).catch((err: unknown) => {
      throw sourceError(source, err);
    });
    if (info.format !== 'qcow2')
      throw new ClientError(
        'SOURCE_UNAVAILABLE',
        `source ${source}: format is ${info.format}; change tracking needs qcow2 with persistent dirty bitmaps`,
        false,
      );
    const plan = rotationFor(
      source,
      info.bitmaps.map((b) => ({ name: b.name, inconsistent: b.flags.includes('in-use') })),
      previousChangeId,
      chain,
      chainHeads,
    );
    const nextName = plan.nextName;
    try {
      for (const later of plan.mergeIntoBase) {
        await whileLocked(() => mergeBitmap(source, later.name, (plan.base as TrackedBitmap).name));
        await whileLocked(() => bitmap(source, 'remove', later.name));
      }
      await whileLocked(() => bitmap(source, 'add', nextName));
      if (plan.base)
        await whileLocked(() => bitmap(source, 'disable', (plan.base as TrackedBitmap).name));
    } catch (err) {
      throw sourceError(source, err);
    }
    const exported = await serveImage({
      image: source,
      socketDir: workDir,
      readOnly: true,
      ...(plan.base ? { bitmap: plan.base.name } : {}),
    }).catch((err: unknown) => {
      throw sourceError(source, err);
    });
    return new QemuImageSnapshot(
      source,
      info.virtualSize,
      plan.next,
      plan.base,
      plan.stale,
      exported,
    );
  }
}

class QemuImageSnapshot implements SourceSnapshot {
  readonly changeId: string;
  readonly baseChangeId: string | null;
  private areasClient: NbdClient | undefined;
  private readonly readers: NbdClient[] = [];
  private closed = false;

  constructor(
    private readonly image: string,
    readonly size: number,
    next: QemuChangeId,
    private readonly base: TrackedBitmap | null,
    /** Bitmaps to remove once the job's completion is recorded: the chain's older ones. */
    private readonly stale: TrackedBitmap[],
    private readonly exported: NbdExport,
  ) {
    this.changeId = formatChangeId(next);
    this.baseChangeId = base ? formatChangeId(base.id) : null;
  }

  private get address(): NbdAddress {
    return this.exported.address;
  }

  async openReader(): Promise<NbdClient> {
    const c = await connectWithRetry(this.address, {
      exportName: this.exported.exportName,
      metaContexts: ['base:allocation'],
    });
    this.readers.push(c);
    return c;
  }

  async queryChangedDiskAreas(offset: number): Promise<{ areas: Area[]; covered: number }> {
    const context = this.base ? `qemu:dirty-bitmap:${this.base.name}` : 'base:allocation';
    this.areasClient ??= await connectWithRetry(this.address, {
      exportName: this.exported.exportName,
      metaContexts: [context],
    });
    return queryAreas(this.areasClient, context, offset);
  }

  async commit(): Promise<void> {
    await this.close();
    // Each one on its own: one that cannot go must not keep the others.
    const failed: unknown[] = [];
    for (const b of this.stale)
      await bitmap(this.image, 'remove', b.name).catch((err: unknown) => failed.push(err));
    if (failed.length > 0) throw failed[0];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const clients = [...this.readers, ...(this.areasClient ? [this.areasClient] : [])];
    await Promise.allSettled(clients.map((c) => c.disconnect()));
    await this.exported.server.stop();
  }
}
