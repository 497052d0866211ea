import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** A qemu tool failed; `stderr` holds what it said. */
export class ToolError extends Error {
  override readonly name = 'ToolError';
  constructor(
    readonly command: string,
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(`${command} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || 'no message'}`);
  }
}

/** Every server process this client started and has not yet stopped. */
const running = new Set<ChildProcess>();
// Last line of defence: however this process ends (a crash included), no server it started
// outlives it holding an image. (An orderly end has stopped them already.)
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Runs a tool to completion; resolves its stdout, rejects with `ToolError` naming stderr. */
export async function runTool(cmd: string, args: string[]): Promise<string> {
  const r = await runToolRaw(cmd, args);
  if (r.code !== 0) throw new ToolError(`${cmd} ${args.join(' ')}`, r.stderr, r.code);
  return r.stdout;
}

/** Runs a tool to completion whatever its exit code; rejects only if it cannot be started. */
export function runToolRaw(
  cmd: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new ToolError(`${cmd} ${args.join(' ')}`, e.message, null)));
    child.on('close', (code) =>
      resolve({
        code,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
  });
}

export interface ServerProcess {
  readonly process: ChildProcess;
  /** What the server wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Starts a long-running server (qemu-nbd, qemu-storage-daemon) and waits until `readyPath`
 * exists. A server that exits first rejects with its stderr. The process is tracked until
 * stopped, so `stopAllServers` can end it on an interrupt.
 */
export async function startServer(
  cmd: string,
  args: string[],
  readyPath: string,
  timeoutMs = 10_000,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ServerProcess> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  running.add(child);
  const err: Buffer[] = [];
  child.stderr?.on('data', (b: Buffer) => err.push(b));
  let spawnError: Error | undefined;
  child.on('error', (e) => (spawnError = e));
  child.once('exit', () => running.delete(child));
  const stderr = (): string => Buffer.concat(err).toString('utf8');
  const server: ServerProcess = {
    process: child,
    stderr,
    async stop(graceMs = 5_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited(child);
        clearTimeout(timer);
      }
      running.delete(child);
    },
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (spawnError) throw new ToolError(`${cmd} ${args.join(' ')}`, spawnError.message, null);
    if (child.exitCode !== null || child.signalCode !== null) {
      await sleep(20); // let stderr drain
      throw new ToolError(`${cmd} ${args.join(' ')}`, stderr(), child.exitCode);
    }
    if (existsSync(readyPath)) return server;
    if (Date.now() > deadline) {
      await server.stop(0);
      throw new ToolError(`${cmd} ${args.join(' ')}`, `not ready after ${timeoutMs} ms`, null);
    }
    await sleep(10);
  }
}

/** Kills every server still running (used on SIGINT/SIGTERM before the client exits). */
export async function stopAllServers(): Promise<void> {
  await Promise.all(
    [...running].map(async (child) => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited(child);
      clearTimeout(timer);
      running.delete(child);
    }),
  );
}

export function runningServers(): number {
  return running.size;
}
