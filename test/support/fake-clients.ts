/**
 * Stand-ins the runner can be pointed at (TIDEMARK_RUNNER_CLIENT, through a one-line wrapper
 * file that `fakeClientFile` writes) to see what the runner does with a client:
 * - `record` writes what the child process received, then runs the real client;
 * - `garbage` prints lines that are not the client's protocol and exits 0;
 * - `exit` exits 3 with only a log line;
 * - `slow` prints one progress line, stays silent for 4 s, then runs the real client;
 * - `kill-runner` runs the real client to the end, then SIGKILLs its runner before the runner
 *   has seen the result (a runner dying between a finished copy and its report).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ClientEnv } from '@tidemark/backup-client/protocol';

const repoRoot = [resolve(__dirname, '../..'), resolve(__dirname, '../../..')].find((dir) =>
  existsSync(join(dir, 'services', 'backup-client', 'package.json')),
) as string;
const realClient = join(repoRoot, 'services/backup-client/dist/main.js');

function runReal(): never {
  const r = spawnSync(process.execPath, [realClient, ...process.argv.slice(2)], {
    stdio: 'inherit',
  });
  process.exit(r.status ?? 1);
}

export function fakeClient(mode: string): void {
  const work = process.env[ClientEnv.WorkDir] ?? '.';
  const jobId = process.env[ClientEnv.JobId] ?? 'none';
  switch (mode) {
    case 'record':
      writeFileSync(
        join(dirname(work), `client-env-${jobId}.json`),
        JSON.stringify({
          [ClientEnv.JobId]: process.env[ClientEnv.JobId] ?? null,
          [ClientEnv.PreviousChangeId]: process.env[ClientEnv.PreviousChangeId] ?? null,
          argv: process.argv.slice(2),
          envKeys: Object.keys(process.env).sort(),
        }),
      );
      return runReal();
    case 'garbage':
      process.stdout.write('Starting copy... 10%\n{"type":"result","status":"completed"}\n');
      process.exit(0);
      break;
    case 'exit':
      process.stderr.write('something went wrong\n');
      process.exit(3);
      break;
    case 'slow':
      process.stdout.write(
        `${JSON.stringify({ type: 'progress', phase: 'preparing', disks: [], bytesPerSecond: 0 })}\n`,
      );
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 4000);
      return runReal();
    case 'kill-runner': {
      const env = { ...process.env };
      delete env[ClientEnv.ExitWithParent]; // on its own: it does not wait for a commit
      const r = spawnSync(process.execPath, [realClient, ...process.argv.slice(2)], {
        env,
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      if (r.status === 0) process.kill(process.ppid, 'SIGKILL');
      process.exit(r.status ?? 1);
      break;
    }
    default:
      throw new Error(`unknown fake client ${mode}`);
  }
}

/** Writes `<dir>/<mode>-client.js`, a client entry that behaves as `mode`. */
export function fakeClientFile(
  dir: string,
  mode: 'record' | 'garbage' | 'exit' | 'slow' | 'kill-runner',
): string {
  const file = join(dir, `${mode}-client.js`);
  const compiled = join(repoRoot, 'test/dist/support/fake-clients.js');
  writeFileSync(
    file,
    `require(${JSON.stringify(compiled)}).fakeClient(${JSON.stringify(mode)});\n`,
  );
  return file;
}
