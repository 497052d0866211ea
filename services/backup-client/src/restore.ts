import { existsSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import type { Logger } from '@tidemark/shared';
import { copyPlan, planCopy } from './copy/copy-disk';
import { ClientError } from './errors';
import { backingChain, createQcow2, serveImage, type NbdExport } from './qemu/image';
import { ToolError } from './qemu/process';
import { partialPath } from './protocol';
import { connectWithRetry, queryAreas } from './source/nbd-areas';

export interface ToolContext {
  workDir: string;
  log: Logger;
  out: (line: object) => void;
}

/**
 * Reads a chain (its top file, with every backing file under it) back into one new image:
 * only data is copied, holes and zeroes stay unwritten. Written to `<to>.partial`, renamed
 * when flushed.
 */
export async function restoreChain(
  from: string,
  to: string,
  format: 'raw' | 'qcow2',
  ctx: ToolContext,
): Promise<{ from: string; to: string; chain: string[]; size: number; bytesCopied: number }> {
  if (existsSync(to))
    throw new ClientError(
      'TARGET_INVALID',
      `--to ${to} already exists; restore never overwrites`,
      false,
    );
  const chain = await backingChain(from).catch((e: unknown) => {
    throw new ClientError(
      'SOURCE_UNAVAILABLE',
      `--from ${from}: ${e instanceof ToolError ? e.stderr.trim() : String(e)}`,
      false,
    );
  });
  const size = (chain[0] as { virtualSize: number }).virtualSize;
  const partial = partialPath(to);
  const exports: NbdExport[] = [];
  try {
    if (format === 'qcow2') await createQcow2(partial, size);
    else {
      const fh = await open(partial, 'w');
      await fh.truncate(size);
      await fh.close();
    }
    const src = await serveImage({ image: from, socketDir: ctx.workDir, readOnly: true });
    exports.push(src);
    const dst = await serveImage({
      image: partial,
      socketDir: ctx.workDir,
      readOnly: false,
      format,
    });
    exports.push(dst);
    const reader = await connectWithRetry(src.address, {
      exportName: '',
      metaContexts: ['base:allocation'],
    });
    const writer = await connectWithRetry(dst.address, { exportName: '' });
    const plan = await planCopy(
      { size, queryChangedDiskAreas: (o) => queryAreas(reader, 'base:allocation', o) },
      reader,
    );
    let last = 0;
    ctx.out({ type: 'progress', phase: 'copying', bytesDone: 0, bytesTotal: plan.dataBytes });
    await copyPlan(plan, reader, writer, false, {
      onProgress: (done) => {
        if (Date.now() - last < 1000) return;
        last = Date.now();
        ctx.out({
          type: 'progress',
          phase: 'copying',
          bytesDone: done,
          bytesTotal: plan.dataBytes,
        });
      },
    });
    await writer.flush();
    await writer.disconnect();
    await reader.disconnect();
    for (const e of exports) await e.server.stop();
    const fh = await open(partial, 'r');
    await fh.sync();
    await fh.close();
    await rename(partial, to);
    ctx.log.info({ from, to, bytes: plan.dataBytes }, 'chain restored');
    return { from, to, chain: chain.map((c) => c.path), size, bytesCopied: plan.dataBytes };
  } catch (err) {
    for (const e of exports) await e.server.stop();
    await rm(partial, { force: true });
    throw err;
  }
}
