/**
 * What a test run left behind: processes started for it (found by a directory of its own in
 * their command line, so that suites running at the same time do not count) and files.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface ProcessInfo {
  pid: number;
  argv: string[];
}

/** Running processes (not this one) whose command line mentions `dir`. */
export function processesMentioning(dir: string): ProcessInfo[] {
  const found: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // A zombie's command line is empty: it holds nothing any more.
    if (cmdline.includes(dir)) found.push({ pid, argv: cmdline.split('\0').filter(Boolean) });
  }
  return found;
}

/** Files under `dir` (recursively) whose name matches `name`. */
export function filesUnder(dir: string, name: RegExp): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return; // removed meanwhile
    }
    for (const e of entries) {
      const path = join(d, e.name);
      if (e.isDirectory()) walk(path);
      else if (name.test(e.name)) found.push(path);
    }
  };
  walk(dir);
  return found;
}
