import { join } from 'node:path';
import type { NbdAddress } from '../nbd/index';
import { runTool, startServer, type ServerProcess } from './process';

export interface BitmapInfo {
  name: string;
  /** qemu's flags: `auto` (recording), `in-use` (left open by a process that did not close it). */
  flags: string[];
  granularity: number;
}

export interface ImageInfo {
  path: string;
  format: string;
  virtualSize: number;
  clusterSize: number | null;
  /** Backing file as qemu resolves it, or null. */
  backingPath: string | null;
  bitmaps: BitmapInfo[];
}

interface RawInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'cluster-size'?: number;
  'full-backing-filename'?: string;
  'format-specific'?: { type: string; data?: { bitmaps?: BitmapInfo[] } };
}

function toInfo(raw: RawInfo): ImageInfo {
  return {
    path: raw.filename,
    format: raw.format,
    virtualSize: raw['virtual-size'],
    clusterSize: raw['cluster-size'] ?? null,
    backingPath: raw['full-backing-filename'] ?? null,
    bitmaps: raw['format-specific']?.data?.bitmaps ?? [],
  };
}

/**
 * `qemu-img info`. With `shared`, reads an image another process holds open (`-U`); the
 * bitmap flags it shows may then be stale.
 */
export async function imageInfo(path: string, opts: { shared?: boolean } = {}): Promise<ImageInfo> {
  const out = await runTool('qemu-img', [
    'info',
    '--output=json',
    ...(opts.shared ? ['-U'] : []),
    path,
  ]);
  return toInfo(JSON.parse(out) as RawInfo);
}

/** The image and its backing files, top first. */
export async function backingChain(path: string): Promise<ImageInfo[]> {
  const out = await runTool('qemu-img', ['info', '--output=json', '--backing-chain', path]);
  return (JSON.parse(out) as RawInfo[]).map(toInfo);
}

export async function createQcow2(
  path: string,
  size: number,
  backing: string | null = null,
): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2'];
  if (backing) args.push('-b', backing, '-F', 'qcow2');
  args.push(path, String(size));
  await runTool('qemu-img', args);
}

/** One extent of `qemu-img map --output=json`: `depth` 0 is allocated in the image itself. */
export interface MapExtent {
  start: number;
  length: number;
  depth: number;
  zero: boolean;
  data: boolean;
}

export async function imageMap(path: string): Promise<MapExtent[]> {
  const out = await runTool('qemu-img', ['map', '--output=json', '-f', 'qcow2', path]);
  return JSON.parse(out) as MapExtent[];
}

/**
 * `qemu-img commit -d`: writes every cluster `overlay` holds into its backing file, leaving the
 * overlay as it was (so a commit that stops half-way can be run again).
 */
export async function commitOverlay(overlay: string): Promise<void> {
  await runTool('qemu-img', ['commit', '-q', '-d', '-f', 'qcow2', overlay]);
}

export type BitmapOp = 'add' | 'remove' | 'enable' | 'disable';

export async function bitmap(image: string, op: BitmapOp, name: string): Promise<void> {
  await runTool('qemu-img', ['bitmap', `--${op}`, '-f', 'qcow2', image, name]);
}

/** Merges bitmap `source` of the same image into `target`. */
export async function mergeBitmap(image: string, source: string, target: string): Promise<void> {
  await runTool('qemu-img', ['bitmap', '--merge', source, '-f', 'qcow2', image, target]);
}

export interface NbdExport {
  address: NbdAddress;
  exportName: string;
  server: ServerProcess;
}

let socketSeq = 0;

/**
 * qemu-nbd allocates a bounce buffer per request. With glibc's default thresholds a buffer of
 * more than 128 KiB is a fresh mmap, page-faulted in and unmapped again for every request; on
 * the 2-core VMs this was measured on, that made copies 3-4x slower (the source qemu-nbd spent
 * ~6 s of CPU per GiB in page faults and TLB shootdowns). Keeping such buffers on the heap
 * removes it. The caller's own GLIBC_TUNABLES come first and win.
 */
export const QEMU_NBD_MALLOC_TUNABLES =
  'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456';

export function qemuNbdEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const own = base.GLIBC_TUNABLES;
  return {
    ...base,
    GLIBC_TUNABLES: own ? `${QEMU_NBD_MALLOC_TUNABLES}:${own}` : QEMU_NBD_MALLOC_TUNABLES,
  };
}

/**
 * Serves an image with qemu-nbd on a unix socket in `socketDir`. Read-only exports may carry a
 * dirty bitmap (`-B`); `persistent` keeps the server up across client connections.
 */
export async function serveImage(opts: {
  image: string;
  socketDir: string;
  readOnly: boolean;
  format?: 'qcow2' | 'raw';
  bitmap?: string;
  connections?: number;
}): Promise<NbdExport> {
  const socket = join(opts.socketDir, `nbd-${process.pid}-${socketSeq++}.sock`);
  const args = [`--socket=${socket}`, `--format=${opts.format ?? 'qcow2'}`, '--persistent'];
  args.push(`--shared=${opts.connections ?? 4}`);
  if (opts.readOnly) args.push('--read-only');
  else args.push('--cache=writeback', '--aio=threads');
  if (opts.bitmap) args.push(`--bitmap=${opts.bitmap}`);
  // Ready once the pid file exists: qemu-nbd listens on its socket before it opens the image
  // and writes the pid file only after, so a socket alone may belong to a server about to exit
  // (the image locked by another process), and the copy would fail on a reset connection
  // instead of the lock's own message.
  const pidFile = `${socket}.pid`;
  args.push(`--pid-file=${pidFile}`, opts.image);
  const server = await startServer('qemu-nbd', args, pidFile, 10_000, qemuNbdEnv());
  return { address: { path: socket }, exportName: '', server };
}
