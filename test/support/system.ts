/**
 * The whole system as a user runs it: the ledger, the hub and an appliance-runner as their own
 * processes (built `dist/main.js`), on the NATS and MySQL servers given, driven only through
 * the hub's REST API and the `tidemark` CLI. Used by the demo (`npm run demo`) and the e2e suites.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { clientMain } from './disks';
import { freePort } from './env';

const repoRoot = resolve(clientMain, '../../../..');
const mainOf = (service: string) => join(repoRoot, 'services', service, 'dist', 'main.js');
export const cliMain = mainOf('cli');

export interface SystemOptions {
  natsUrl: string;
  mysqlUrl: string;
  /** Streams, consumers and subjects of this system (`TIDEMARK_BUS_PREFIX`). */
  busPrefix: string;
  /** Logs (`<service>.log`, pino JSON) and the runner's work directory go under here. */
  dir: string;
  /** Bearer token of the hub's API; none by default. */
  apiToken?: string;
  /**
   * What the runners may touch (TIDEMARK_REPOSITORY_ROOTS, TIDEMARK_SOURCE_ROOTS): the
   * directories the suite's repositories are created under, and its disks' images and sockets
   * lie under. Required, as a runner without them does not start.
   */
  roots: { repository: string[]; source: string[] };
  /** Extra variables for the runner (copy tuning, ack wait). */
  runnerEnv?: Record<string, string>;
  logLevel?: string;
  /** Variables for one service only (its NATS user, say). */
  serviceEnv?: Partial<Record<(typeof SERVICES)[number], Record<string, string>>>;
  /** Start no appliance-runner: jobs stay queued for an old client to copy and report. */
  withoutRunner?: boolean;
  /** Appliance-runners to start (`runner-1`, `runner-2`, …); default 1. */
  runners?: number;
  /** Variables for one process only, by its name (`runner-1`: its own NATS address, say). */
  processEnv?: Record<string, Record<string, string>>;
  /**
   * Starts a process again 1 s after it exits on its own (not by `kill` or `stop`), as the
   * compose stack's `restart: unless-stopped` does: a service that could not start while NATS
   * or MySQL was away tries again.
   */
  restartOnExit?: boolean;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunningSystem {
  hubUrl: string;
  /** A REST call; the JSON answer (or undefined) with its status. */
  api<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: T }>;
  /**
   * Runs `tidemark <args>` against this hub. `echo` passes its output through as well (the demo
   * shows the progress bar); it is captured either way.
   */
  cli(args: string[], opts?: { echo?: boolean }): Promise<CliResult>;
  /** The last `lines` lines each service logged. */
  logTail(lines?: number): string;
  /** Everything every service logged so far. */
  logs(): string;
  /** The processes: `ledger`, `hub`, `runner-1`, … */
  names(): string[];
  /** Sends `signal` to one process and waits until it is gone. */
  kill(name: string, signal?: NodeJS.Signals): Promise<void>;
  /** Starts one process again (after `kill`), with the same environment and log file. */
  start(name: string): void;
  /** Stops every service (SIGTERM, then SIGKILL after 10 s). */
  stop(): Promise<void>;
  /** Each exit of a process on its own so far (`runner-1 exited with code 1`). */
  exits(): string[];
}

const SERVICES = ['ledger', 'hub', 'appliance-runner'] as const;

export async function startSystem(opts: SystemOptions): Promise<RunningSystem> {
  const port = await freePort();
  const hubUrl = `http://127.0.0.1:${port}`;
  const runnerDir = join(opts.dir, 'runner');
  mkdirSync(runnerDir, { recursive: true });
  const common: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    TIDEMARK_NATS_URL: opts.natsUrl,
    TIDEMARK_BUS_PREFIX: opts.busPrefix,
    TIDEMARK_LOG_LEVEL: opts.logLevel ?? 'info',
  };
  const envOf: Record<(typeof SERVICES)[number], Record<string, string>> = {
    ledger: { TIDEMARK_MYSQL_URL: opts.mysqlUrl },
    hub: {
      TIDEMARK_HUB_PORT: String(port),
      ...(opts.apiToken
        ? { TIDEMARK_API_TOKEN: opts.apiToken, TIDEMARK_HUB_HOST: '127.0.0.1' }
        : {}),
    },
    'appliance-runner': {
      TIDEMARK_REPOSITORY_ROOTS: opts.roots.repository.join(':'),
      TIDEMARK_SOURCE_ROOTS: opts.roots.source.join(':'),
      TIDEMARK_RUNNER_WORK_DIR: runnerDir,
      ...opts.runnerEnv,
    },
  };
  // Each process by name: its service and its own variables.
  const processes = new Map<
    string,
    { service: (typeof SERVICES)[number]; env: Record<string, string> }
  >();
  for (const service of SERVICES) {
    const own = { ...common, ...envOf[service], ...opts.serviceEnv?.[service] };
    if (service !== 'appliance-runner') processes.set(service, { service, env: own });
    else if (!opts.withoutRunner)
      for (let i = 1; i <= (opts.runners ?? 1); i++)
        processes.set(`runner-${i}`, {
          service,
          env: { ...own, TIDEMARK_RUNNER_ID: `runner-${i}` },
        });
  }
  for (const [name, env] of Object.entries(opts.processEnv ?? {})) {
    const p = processes.get(name);
    if (!p) throw new Error(`processEnv names no process ${name}`);
    p.env = { ...p.env, ...env };
  }
  const children = new Map<string, ChildProcess>();
  // Ended by us (kill, stop): not restarted.
  const ended = new WeakSet<ChildProcess>();
  const exits: string[] = [];
  let stopped = false;
  const logFile = (name: string) => join(opts.dir, `${name}.log`);
  const system: RunningSystem = {
    hubUrl,
    async api(method, path, body) {
      const headers: Record<string, string> = {};
      if (opts.apiToken) headers.authorization = `Bearer ${opts.apiToken}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${hubUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: (text ? JSON.parse(text) : undefined) as never };
    },
    cli(args, { echo = false } = {}) {
      const child = spawn(process.execPath, [cliMain, ...args], {
        env: {
          ...process.env,
          TIDEMARK_URL: hubUrl,
          ...(opts.apiToken ? { TIDEMARK_API_TOKEN: opts.apiToken } : {}),
        },
        // With echo on a terminal the CLI draws its progress bar on our stderr.
        stdio: ['ignore', 'pipe', echo ? 'inherit' : 'pipe'],
      });
      const out = { stdout: '', stderr: '' };
      child.stdout?.setEncoding('utf8').on('data', (s: string) => {
        out.stdout += s;
        if (echo) process.stdout.write(s);
      });
      child.stderr?.setEncoding('utf8').on('data', (s: string) => (out.stderr += s));
      return new Promise((resolveRun, reject) => {
        child.once('error', reject);
        child.once('close', (code) => resolveRun({ code, ...out }));
      });
    },
    logs() {
      return system.logTail(Number.MAX_SAFE_INTEGER);
    },
    logTail(lines = 20) {
      return [...processes.keys()]
        .map((s) => {
          let text = '';
          try {
            text = readFileSync(logFile(s), 'utf8');
          } catch {
            text = '(no log)';
          }
          return `--- ${s} ---\n${text.trimEnd().split('\n').slice(-lines).join('\n')}`;
        })
        .join('\n');
    },
    names: () => [...processes.keys()],
    async kill(name, signal = 'SIGKILL') {
      const child = children.get(name);
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      ended.add(child);
      const gone = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    },
    start(name) {
      const p = processes.get(name);
      if (!p) throw new Error(`no process ${name}`);
      const log = createWriteStream(logFile(name), { flags: 'a' });
      const child = spawn(process.execPath, [mainOf(p.service)], {
        env: p.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout.pipe(log);
      child.stderr.pipe(log);
      children.set(name, child);
      child.once('exit', (code, signal) => {
        if (ended.has(child) || stopped) return;
        exits.push(`${name} exited with ${signal ?? `code ${code}`}`);
        if (!opts.restartOnExit) return;
        setTimeout(() => {
          if (!stopped && children.get(name) === child) system.start(name);
        }, 1000);
      });
    },
    exits: () => [...exits],
    async stop() {
      stopped = true;
      await Promise.all([...children.keys()].reverse().map((name) => system.kill(name, 'SIGTERM')));
    },
  };

  for (const name of processes.keys()) system.start(name);

  // Ready when the hub answers and the ledger answers the hub.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const exited = [...children].find(([, c]) => c.exitCode !== null);
    if (exited) {
      await system.stop();
      throw new Error(`${exited[0]} exited at start:\n${system.logTail()}`);
    }
    try {
      if ((await system.api('GET', '/api/v1/vms')).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await system.stop();
      throw new Error(`the services did not come up within 30 s:\n${system.logTail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return system;
}

/** A job as the API shows it (the fields the demo and the suites read). */
export interface ApiJob {
  job_type: 'backup' | 'replication';
  status: string;
  backup_type: string;
  bytes_transferred: number | null;
  error_code: string | null;
  error_message: string | null;
  started_at: string | null;
  completed_at: string | null;
  disks: Array<{
    disk_key: string;
    change_id: string | null;
    previous_change_id: string | null;
    bytes_transferred: number | null;
    target_path: string | null;
    backing_path: string | null;
    full_reason: string | null;
    canary: { sampled_bytes: number; mismatched_bytes: number } | null;
    change_tracking: 'trusted' | 'untrusted' | null;
  }>;
}

/** The job id from `tidemark backup|replicate start`'s first line. */
export function startedJobId(stdout: string): string {
  const m = /^(?:backup|replication) (\S+) queued/m.exec(stdout);
  if (!m) throw new Error(`no job id in the CLI's output:\n${stdout}`);
  return m[1];
}
