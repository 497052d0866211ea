import { createDigester } from './digest';
import { resolve } from 'node:path';
import { AllocationFlag, type NbdClient } from './nbd/index';
import { ManifestError, ManifestReader } from './protocol';
import { backingChain, serveImage, type ImageInfo } from './qemu/image';
import { runToolRaw, ToolError } from './qemu/process';
import { ClientError } from './errors';
import { connectWithRetry } from './source/nbd-areas';
import type { ToolContext } from './restore';

export interface FileVerdict {
  path: string;
  extentsChecked: number;
  bytesChecked: number;
  problems: string[];
}

export interface VerifyResult {
  status: 'ok' | 'failed';
  image: string;
  files: FileVerdict[];
}

const CHUNK = 4 * 1024 * 1024;
/** Largest BLOCK_STATUS request asked (the length field is 32-bit). */
const STATUS_SPAN = 0x80000000;

/**
 * The first place in `offset`+`length` that does not read as zeroes, or null. Where the image's
 * own allocation says a range reads as zeroes (a hole of the whole chain, a zero cluster) it is
 * not read — a read would return zeroes by the very same metadata, so a 16 TiB sparse disk
 * costs a few thousand BLOCK_STATUS requests, not 16 TiB of reads; everything else is read.
 */
async function firstNonZero(
  reader: NbdClient,
  zero: Buffer,
  offset: number,
  length: number,
): Promise<{ at: number; length: number } | null> {
  const end = offset + length;
  for (let at = offset; at < end;) {
    const extents = (await reader.blockStatus(at, Math.min(STATUS_SPAN, end - at))).get(
      'base:allocation',
    );
    if (!extents?.length) throw new Error(`no allocation extents at offset ${at}`);
    for (const e of extents) {
      if (at >= end) break;
      const n = Math.min(e.length, end - at);
      if (n <= 0) throw new Error(`empty allocation extent at offset ${at}`);
      if (!(e.flags & AllocationFlag.ZERO))
        for (let p = at; p < at + n; p += CHUNK) {
          const m = Math.min(CHUNK, at + n - p);
          const data = await reader.read(p, m);
          if (!data.equals(zero.subarray(0, m))) return { at: p, length: m };
        }
      at += n;
    }
  }
  return null;
}

async function qemuImgCheck(path: string): Promise<string[]> {
  const r = await runToolRaw('qemu-img', ['check', '--output=json', '-f', 'qcow2', path]);
  if (r.code === 0 || r.code === 3) return []; // 3: leaked clusters only, data intact
  let detail = r.stderr.trim();
  try {
    const j = JSON.parse(r.stdout) as { corruptions?: number; 'check-errors'?: number };
    detail = `${j.corruptions ?? 0} corruption(s), ${j['check-errors'] ?? 0} check error(s)`;
  } catch {
    // keep stderr
  }
  return [`qemu-img check: ${detail || `exit ${r.code}`}`];
}

/**
 * Proves a chain holds what was written. For each file, base first: `qemu-img check`, then the
 * chain up to that file is read back where that file's job wrote, and every data extent must
 * have the digest its manifest recorded, every zeroed range must read as zeroes. A flipped
 * byte in any file's data or metadata shows up at that file's level even when a later overlay
 * hides it from the chain's top.
 */
export async function verifyChain(image: string, ctx: ToolContext): Promise<VerifyResult> {
  let chain: ImageInfo[];
  try {
    chain = await backingChain(image);
  } catch (e) {
    throw new ClientError(
      'SOURCE_UNAVAILABLE',
      `${image}: ${e instanceof ToolError ? e.stderr.trim() : String(e)}`,
      false,
    );
  }
  const files: FileVerdict[] = [];
  const digester = await createDigester();
  for (const info of [...chain].reverse()) {
    const path = resolve(info.path);
    const verdict: FileVerdict = { path, extentsChecked: 0, bytesChecked: 0, problems: [] };
    files.push(verdict);
    verdict.problems.push(...(await qemuImgCheck(path)));
    let manifest: ManifestReader;
    try {
      manifest = await ManifestReader.open(path);
    } catch (e) {
      if (!(e instanceof ManifestError)) throw e;
      verdict.problems.push(e.message);
      continue;
    }
    const { header } = manifest;
    if (header.size !== info.virtualSize)
      verdict.problems.push(`size is ${info.virtualSize}, the manifest says ${header.size}`);
    if ((header.backingPath ?? null) !== (info.backingPath ? resolve(info.backingPath) : null))
      verdict.problems.push(
        `backing file is ${info.backingPath ?? 'none'}, the manifest says ${header.backingPath ?? 'none'}`,
      );
    const exported = await serveImage({ image: path, socketDir: ctx.workDir, readOnly: true });
    try {
      const reader = await connectWithRetry(exported.address, {
        exportName: '',
        metaContexts: ['base:allocation'],
      });
      const zero = Buffer.alloc(CHUNK);
      for await (const entry of manifest.entries()) {
        const { offset, length } = entry;
        if (offset + length > reader.size) {
          verdict.problems.push(`extent ${offset}+${length} lies past the end of the image`);
          continue;
        }
        if (entry.type === 'zero') {
          const bad = await firstNonZero(reader, zero, offset, length);
          if (bad)
            verdict.problems.push(
              `range ${bad.at}+${bad.length} should read as zeroes and does not`,
            );
          verdict.extentsChecked++;
        } else {
          for (const [i, digest] of entry.digests.entries()) {
            const at = offset + i * entry.chunk;
            const n = Math.min(entry.chunk, offset + length - at);
            const data = await reader.read(at, n);
            if (digester.digest(data) !== digest)
              verdict.problems.push(
                `extent ${at}+${n}: the data differs from what was written (${header.digest} digest)`,
              );
            verdict.extentsChecked++;
          }
        }
        verdict.bytesChecked += length;
      }
      await reader.disconnect();
    } catch (e) {
      verdict.problems.push(
        e instanceof ManifestError
          ? e.message
          : `read failed: ${e instanceof Error ? e.message : String(e)}`,
      );
    } finally {
      await manifest.close();
      await exported.server.stop();
    }
    ctx.out({
      type: 'progress',
      phase: 'verifying',
      file: path,
      done: files.length,
      total: chain.length,
    });
    ctx.log.info({ file: path, problems: verdict.problems.length }, 'file verified');
  }
  return {
    status: files.every((f) => f.problems.length === 0) ? 'ok' : 'failed',
    image,
    files,
  };
}
