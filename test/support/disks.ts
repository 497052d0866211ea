/**
 * Real disk images for the backup client's suites: qcow2 files in a temporary directory,
 * written with qemu-io (so persistent dirty bitmaps record the writes as a guest's would),
 * and the client run as the process the runner starts.
 */
import { bitmapName, chainTag, parseChangeId } from '@tidemark/backup-client/source/change-id';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { DiskResult } from '@tidemark/backup-client/protocol';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const CLUSTER = 64 * KiB;

/** The repository root, whether this file runs from test/support or compiled in test/dist. */
const repoRoot = [resolve(__dirname, '../..'), resolve(__dirname, '../../..')].find((dir) =>
  existsSync(join(dir, 'services', 'backup-client', 'package.json')),
) as string;

export const clientMain = join(repoRoot, 'services/backup-client/dist/main.js');

export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

export function createImage(path: string, size: number): void {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', path, String(size)]);
}

/** A write of `pattern` (one byte repeated), or zeroes (`pattern` 'zero'), or a discard. */
export interface DiskWrite {
  offset: number;
  length: number;
  pattern: number | 'zero' | 'discard';
}

/**
 * Applies writes with qemu-io in one process (as a guest would: bitmaps record them). `image`
 * may also be a running disk's NBD export (`nbd+unix://…`, format raw): its daemon records them.
 */
export function writeDisk(
  image: string,
  writes: DiskWrite[],
  format: 'qcow2' | 'raw' = 'qcow2',
): void {
  const cmds = writes.flatMap((w) => [
    '-c',
    w.pattern === 'zero'
      ? `write -z ${w.offset} ${w.length}`
      : w.pattern === 'discard'
        ? `discard ${w.offset} ${w.length}`
        : `write -P ${w.pattern} ${w.offset} ${w.length}`,
  ]);
  for (let i = 0; i < cmds.length; i += 400)
    run('qemu-io', ['-f', format, ...cmds.slice(i, i + 400), image]);
}

/** A small deterministic random source, so a failing run can be replayed (the canary's own). */
export { seededRandom as rng } from '@tidemark/backup-client/copy/canary';

/** `qemu-img compare`: true when the two images read the same (any formats, any chains). */
export function sameContent(a: string, b: string): { same: boolean; output: string } {
  const r = spawnSync('qemu-img', ['compare', a, b], { encoding: 'utf8' });
  if (r.status !== 0 && r.status !== 1)
    throw new Error(`qemu-img compare ${a} ${b} failed: ${r.stderr}`);
  return { same: r.status === 0, output: `${r.stdout}${r.stderr}`.trim() };
}

/**
 * The name of the bitmap that tracks changes from `changeId` on, in the chain of `jobType` jobs
 * into `repositoryId` (the repository `writeJob` names by default).
 */
export function trackingBitmap(
  changeId: string,
  jobType: 'backup' | 'replication' = 'backup',
  repositoryId = 'repo1',
): string {
  const id = parseChangeId(changeId);
  if (!id) throw new Error(`not a qemu change_id: ${changeId}`);
  return bitmapName(chainTag(jobType, repositoryId), id);
}

export function bitmapNames(image: string): Array<{ name: string; flags: string[] }> {
  const info = JSON.parse(run('qemu-img', ['info', '--output=json', '-U', image])) as {
    'format-specific'?: { data?: { bitmaps?: Array<{ name: string; flags: string[] }> } };
  };
  return info['format-specific']?.data?.bitmaps ?? [];
}

export interface ClientRun {
  code: number | null;
  lines: Array<Record<string, unknown>>;
  result: Record<string, unknown> | undefined;
  stderr: string;
}

/** One disk of a completed result line. */
export type ResultDisk = DiskResult;

/** The disks of a completed run; throws with the result and the client's log otherwise. */
export function completedDisks(r: ClientRun): ResultDisk[] {
  if (r.code !== 0 || r.result?.status !== 'completed')
    throw new Error(
      `client failed (exit ${r.code}): ${JSON.stringify(r.result)}\n${r.stderr.slice(-4000)}`,
    );
  return r.result.disks as ResultDisk[];
}

/** Runs `tidemark-backup-client` as a process with `args`, `env` added to a clean environment. */
export function runClient(
  args: string[],
  env: Record<string, string | undefined>,
  opts: { onLine?: (line: Record<string, unknown>, child: ChildProcess) => void } = {},
): Promise<ClientRun> {
  const childEnv: Record<string, string> = { PATH: process.env.PATH ?? '' };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) childEnv[k] = v;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [clientMain, ...args], {
      env: childEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const lines: Array<Record<string, unknown>> = [];
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString('utf8');
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        const text = out.slice(0, nl);
        out = out.slice(nl + 1);
        const line = JSON.parse(text) as Record<string, unknown>;
        lines.push(line);
        opts.onLine?.(line, child);
      }
    });
    child.stderr.on('data', (b: Buffer) => (err += b.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) =>
      resolvePromise({
        code,
        lines,
        result: lines.filter((l) => l.type === 'result').at(-1),
        stderr: err,
      }),
    );
  });
}

export interface JobDisk {
  diskKey: string;
  source: string;
  targetPath: string;
  backingPath?: string | null;
  previousChangeId?: string | null;
}

/** Writes a job file as the runner would hand it over (`backup.start` data plus the job type). */
export function writeJob(
  dir: string,
  name: string,
  job: {
    jobType?: 'backup' | 'replication';
    backupType: 'full' | 'incremental';
    disks: JobDisk[];
  },
): string {
  const path = join(dir, `${name}.job.json`);
  writeFileSync(
    path,
    JSON.stringify({
      jobType: job.jobType ?? 'backup',
      vmName: 'vm1',
      backupType: job.backupType,
      repositoryId: 'repo1',
      disks: job.disks,
    }),
  );
  return path;
}

export interface StorageDaemon {
  pid: number;
  qmpSocket: string;
  nbdSocket: string;
  node: string;
  /** The guest's writable export of the disk. */
  exportName: string;
  /** The client's source URI for this disk. */
  source: string;
  /** Ends the daemon: SIGTERM writes the persistent bitmaps back, SIGKILL does not. */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
}

/** A running disk: qemu-storage-daemon serving `image` to a "guest" over NBD, with a QMP monitor. */
export async function startStorageDaemon(
  image: string,
  dir: string,
  tag: string,
): Promise<StorageDaemon> {
  const qmpSocket = join(dir, `${tag}-qmp.sock`);
  const nbdSocket = join(dir, `${tag}-nbd.sock`);
  const child = spawn(
    'qemu-storage-daemon',
    [
      '--blockdev',
      `driver=file,filename=${image},node-name=${tag}-file`,
      '--blockdev',
      `driver=qcow2,file=${tag}-file,node-name=disk0`,
      '--nbd-server',
      `addr.type=unix,addr.path=${nbdSocket}`,
      '--export',
      'type=nbd,id=guest,node-name=disk0,name=disk0,writable=on',
      '--chardev',
      `socket,path=${qmpSocket},server=on,wait=off,id=qmp`,
      '--monitor',
      'chardev=qmp',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  for (let i = 0; i < 500 && !(existsSync(qmpSocket) && existsSync(nbdSocket)); i++) {
    if (child.exitCode !== null) throw new Error(`qemu-storage-daemon exited: ${stderr}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return {
    pid: child.pid as number,
    qmpSocket,
    nbdSocket,
    node: 'disk0',
    exportName: 'disk0',
    source: `qemu-live:${qmpSocket}?node=disk0&nbd=${nbdSocket}`,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await gone;
    },
  };
}

/** Restores the chain whose top is `top` into `<dir>/<name>.raw` with the client; its path. */
export async function restoreRaw(dir: string, top: string, name: string): Promise<string> {
  const to = join(dir, `${name}.raw`);
  const r = await runClient(['restore', '--from', top, '--to', to], {});
  if (r.code !== 0) throw new Error(`restore failed: ${JSON.stringify(r.result)} ${r.stderr}`);
  return to;
}
