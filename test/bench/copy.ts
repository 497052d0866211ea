/**
 * Copy throughput of the backup client against nbdcopy between the same kind of qemu-nbd exports,
 * and the time of an incremental (about 1% of clusters changed) against a full backup.
 *
 * `TIDEMARK_BENCH_COPY_GIB` (default 4): size of the source disk; `TIDEMARK_BENCH_PAIRS`
 * (default 3): client/nbdcopy pairs; `TIDEMARK_BENCH_DIR` (default the OS temp dir): where the
 * images go (removed at the end).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CLUSTER,
  MiB,
  createImage,
  rng,
  sameContent,
  writeDisk,
  runClient,
  writeJob,
  completedDisks,
  type ResultDisk,
  type DiskWrite,
} from '../support/disks';
import { ClientEnv } from '@tidemark/backup-client/protocol';
import { qemuNbdEnv } from '@tidemark/backup-client/qemu/image';
import { runToolRaw, ToolError } from '@tidemark/backup-client/qemu/process';
import { writeResults } from './stats';

const GiB = 1024 * MiB;
const SIZE_GIB = Number(process.env.TIDEMARK_BENCH_COPY_GIB ?? 4);
// An even number: the order alternates, and the run second in a pair is measured slower on
// this machine's storage, so an odd count would favour whichever tool goes first more often.
const PAIRS = Math.max(1, Math.floor(Number(process.env.TIDEMARK_BENCH_PAIRS ?? 6)));
const DATA_FRACTION = 0.9;
const CHANGED_FRACTION = 0.01;
const MB = 1e6;

const round = (n: number, digits: number): number => Math.round(n * 10 ** digits) / 10 ** digits;
const gib = (bytes: number): string => `${(bytes / GiB).toFixed(2)} GiB`;
const log = (msg: string): void => console.error(`[copy] ${msg}`);

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Runs a command to completion; rejects (naming stderr) when it exits non-zero. */
async function exec(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  const r = await runToolRaw(cmd, args);
  if (r.code !== 0) throw new ToolError(`${cmd} ${args.join(' ')}`, r.stderr, r.code);
  return r;
}

function firstLine(cmd: string, args: string[]): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? (r.stdout.split('\n')[0]?.trim() ?? null) : null;
}

// Every qemu-nbd this bench starts, so none outlives it (errors, signals, process.exit).
const servers = new Set<ChildProcess>();
const killServers = (): void => {
  for (const child of servers) child.kill('SIGKILL');
};
process.on('exit', killServers);

interface NbdServer {
  uri: string;
  stop: () => Promise<void>;
}

async function startNbd(args: string[], socket: string): Promise<NbdServer> {
  // The same environment the client gives the qemu-nbd it starts (malloc tunables included),
  // so both tools copy between the same kind of exports.
  const child = spawn('qemu-nbd', [`--socket=${socket}`, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: qemuNbdEnv(),
  });
  servers.add(child);
  let stderr = '';
  let spawnError: Error | undefined;
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  child.on('error', (e) => (spawnError = e));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => servers.delete(child));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (spawnError || child.exitCode !== null || child.signalCode !== null) {
      await stop();
      throw new Error(`qemu-nbd ${args.join(' ')}: ${spawnError?.message ?? stderr.trim()}`);
    }
    if (existsSync(socket)) return { uri: `nbd+unix:///?socket=${socket}`, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`qemu-nbd ${args.join(' ')}: not ready after 10 s`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sourceArgs = (image: string): string[] => [
  '-r',
  '-f',
  'qcow2',
  '--persistent',
  '--shared=4',
  image,
];
const targetArgs = (image: string): string[] => [
  '-f',
  'qcow2',
  '--cache=writeback',
  '--aio=threads',
  '--persistent',
  '--shared=4',
  image,
];

/**
 * A raw file filled with random data in runs of 1-8 MiB (64 KiB steps), about DATA_FRACTION of
 * them data and the rest holes, converted to qcow2 (holes stay unallocated).
 */
async function makeSource(
  dir: string,
  size: number,
): Promise<{ image: string; dataBytes: number }> {
  const raw = path.join(dir, 'source.raw');
  const image = path.join(dir, 'source.qcow2');
  const random = rng(0x7e1de);
  const buf = Buffer.allocUnsafe(8 * MiB);
  const fd = openSync(raw, 'w');
  let dataBytes = 0;
  let reported = 0;
  const started = performance.now();
  try {
    ftruncateSync(fd, size);
    for (let at = 0; at < size;) {
      const length = Math.min(size - at, (16 + Math.floor(random() * 113)) * CLUSTER);
      if (random() < DATA_FRACTION) {
        for (let o = 0; o < length; o += buf.length) {
          const n = Math.min(buf.length, length - o);
          randomFillSync(buf, 0, n);
          writeSync(fd, buf, 0, n, at + o);
        }
        dataBytes += length;
      }
      at += length;
      if (at - reported >= size / 10 || at === size) {
        reported = at;
        log(`preparing source: ${Math.round((100 * at) / size)}% of ${gib(size)} written`);
      }
    }
  } finally {
    closeSync(fd);
  }
  log(`converting to qcow2 (${gib(dataBytes)} of data)...`);
  await exec('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, image]);
  rmSync(raw);
  log(`source ready in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return { image, dataBytes };
}

interface ClientBackup {
  seconds: number;
  disk: ResultDisk;
}

/**
 * `sync`, then wait until the kernel has no dirty or writeback pages left (at most 30 s), so
 * no run pays for the previous run's data still going to disk.
 */
async function settle(): Promise<void> {
  spawnSync('sync');
  for (let i = 0; i < 300; i++) {
    const meminfo = readFileSync('/proc/meminfo', 'utf8');
    const kb = (key: string): number =>
      Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0);
    if (kb('Dirty') + kb('Writeback') < 4096) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

let jobSeq = 0;

/** One client process, timed from spawn to exit. */
async function clientBackup(
  dir: string,
  source: string,
  target: { path: string; backingPath: string | null; previousChangeId?: string },
): Promise<ClientBackup> {
  const jobId = `bench-copy-${++jobSeq}`;
  const incremental = target.previousChangeId !== undefined;
  const jobFile = writeJob(dir, jobId, {
    backupType: incremental ? 'incremental' : 'full',
    disks: [
      {
        diskKey: 'd0',
        source,
        targetPath: target.path,
        backingPath: target.backingPath,
        previousChangeId: null,
      },
    ],
  });
  const t0 = performance.now();
  const r = await runClient(['backup', '--job', jobFile], {
    [ClientEnv.JobId]: jobId,
    [ClientEnv.PreviousChangeId]: target.previousChangeId,
    [ClientEnv.WorkDir]: dir,
  });
  const seconds = (performance.now() - t0) / 1000;
  const [disk] = completedDisks(r);
  if (!disk) throw new Error(`client ${jobId} reported no disk`);
  return { seconds, disk };
}

/** qemu-img create of the target, both exports up, nbdcopy --flush, both exports down. */
async function nbdcopyBackup(dir: string, source: string, target: string): Promise<number> {
  const size = statSizeOf(source);
  const t0 = performance.now();
  createImage(target, size);
  const started = await Promise.allSettled([
    startNbd(sourceArgs(source), path.join(dir, 'src.sock')),
    startNbd(targetArgs(target), path.join(dir, 'dst.sock')),
  ]);
  const up = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  try {
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    await exec('nbdcopy', ['--flush', up[0].uri, up[1].uri]);
  } finally {
    await Promise.all(up.map((s) => s.stop()));
  }
  return (performance.now() - t0) / 1000;
}

const virtualSizes = new Map<string, number>();
function statSizeOf(image: string): number {
  let size = virtualSizes.get(image);
  if (size === undefined) {
    const info = JSON.parse(
      spawnSync('qemu-img', ['info', '--output=json', '-U', image], { encoding: 'utf8' }).stdout,
    ) as { 'virtual-size': number };
    size = info['virtual-size'];
    virtualSizes.set(image, size);
  }
  return size;
}

/** What nbdcopy decides for these exports (connections, threads), probed on a small image. */
async function probeNbdcopy(dir: string): Promise<string | null> {
  const probe = path.join(dir, 'probe');
  mkdirSync(probe);
  const src = path.join(probe, 's.qcow2');
  const dst = path.join(probe, 'd.qcow2');
  createImage(src, 16 * MiB);
  writeDisk(src, [{ offset: 0, length: 8 * MiB, pattern: 7 }]);
  createImage(dst, 16 * MiB);
  const a = await startNbd(sourceArgs(src), path.join(probe, 's.sock'));
  try {
    const b = await startNbd(targetArgs(dst), path.join(probe, 'd.sock'));
    try {
      const { stderr } = await exec('nbdcopy', ['--verbose', '--flush', a.uri, b.uri]);
      return /^nbdcopy: (connections=.*)$/m.exec(stderr)?.[1] ?? null;
    } finally {
      await b.stop();
    }
  } finally {
    await a.stop();
    rmSync(probe, { recursive: true, force: true });
  }
}

interface Pair {
  order: 'client first' | 'nbdcopy first';
  client: { seconds: number; MBps: number; bytesTransferred: number };
  nbdcopy: { seconds: number; MBps: number };
  ratio: number;
}

export async function runCopyBench(): Promise<void> {
  const startedAt = new Date().toISOString();
  const size = Math.max(CLUSTER, Math.round((SIZE_GIB * GiB) / CLUSTER) * CLUSTER);
  const base = process.env.TIDEMARK_BENCH_DIR || os.tmpdir();
  const dir = mkdtempSync(path.join(base, 'tidemark-bench-copy-'));
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: stopping the NBD servers and removing ${dir}`);
    killServers();
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const nbdcopyConfig = await probeNbdcopy(dir);
    log(`nbdcopy on these exports: ${nbdcopyConfig ?? 'unknown'}`);
    const { image: source, dataBytes } = await makeSource(dir, size);
    const out = path.join(dir, 'out');
    mkdirSync(out);
    const clientTarget = path.join(out, 'client.qcow2');
    const nbdcopyTarget = path.join(out, 'nbdcopy.qcow2');

    const pairs: Pair[] = [];
    let verified: { client: boolean; nbdcopy: boolean } | null = null;
    for (let i = 0; i < PAIRS; i++) {
      const clientFirst = i % 2 === 0;
      let client: ClientBackup | undefined;
      let nbdcopySeconds = NaN;
      for (const which of clientFirst ? ['client', 'nbdcopy'] : ['nbdcopy', 'client']) {
        // Start each run with no dirty pages of the previous one still being written back.
        await settle();
        if (which === 'client')
          client = await clientBackup(dir, source, { path: clientTarget, backingPath: null });
        else nbdcopySeconds = await nbdcopyBackup(dir, source, nbdcopyTarget);
      }
      if (!client) throw new Error('unreachable: no client run');
      if (i === 0) {
        const c = sameContent(source, clientTarget);
        const n = sameContent(source, nbdcopyTarget);
        verified = { client: c.same, nbdcopy: n.same };
        if (!c.same) throw new Error(`client target differs from the source: ${c.output}`);
        if (!n.same) throw new Error(`nbdcopy target differs from the source: ${n.output}`);
        log('qemu-img compare: both targets equal the source');
      }
      rmSync(clientTarget, { force: true });
      rmSync(nbdcopyTarget, { force: true });
      const clientMBps = client.disk.bytesTransferred / MB / client.seconds;
      const nbdcopyMBps = dataBytes / MB / nbdcopySeconds;
      const pair: Pair = {
        order: clientFirst ? 'client first' : 'nbdcopy first',
        client: {
          seconds: round(client.seconds, 3),
          MBps: round(clientMBps, 1),
          bytesTransferred: client.disk.bytesTransferred,
        },
        nbdcopy: { seconds: round(nbdcopySeconds, 3), MBps: round(nbdcopyMBps, 1) },
        ratio: round(clientMBps / nbdcopyMBps, 3),
      };
      pairs.push(pair);
      log(
        `pair ${i + 1}/${PAIRS} (${pair.order}): client ${pair.client.seconds} s ${pair.client.MBps} MB/s, nbdcopy ${pair.nbdcopy.seconds} s ${pair.nbdcopy.MBps} MB/s, ratio ${pair.ratio}`,
      );
    }

    // Incremental: a full, ~1% of the clusters rewritten with qemu-io (the source's persistent
    // bitmap records them), then an incremental into an overlay on the full.
    const fullPath = path.join(out, 'inc-full.qcow2');
    const incPath = path.join(out, 'inc-1.qcow2');
    await settle();
    const full = await clientBackup(dir, source, { path: fullPath, backingPath: null });
    log(`incremental: full backup took ${full.seconds.toFixed(2)} s`);
    const clusters = Math.ceil(size / CLUSTER);
    const changed = Math.max(1, Math.round(clusters * CHANGED_FRACTION));
    const random = rng(0xc0ffee);
    const picked = new Set<number>();
    while (picked.size < changed) picked.add(Math.floor(random() * clusters));
    const writes: DiskWrite[] = [...picked]
      .sort((a, b) => a - b)
      .map((c) => ({
        offset: c * CLUSTER,
        length: Math.min(CLUSTER, size - c * CLUSTER),
        pattern: 1 + Math.floor(random() * 255),
      }));
    writeDisk(source, writes);
    log(`incremental: wrote ${changed} of ${clusters} clusters with qemu-io`);
    await settle();
    const inc = await clientBackup(dir, source, {
      path: incPath,
      backingPath: fullPath,
      previousChangeId: full.disk.changeId,
    });
    const incSame = sameContent(source, incPath);
    if (!incSame.same)
      throw new Error(`incremental chain differs from the source: ${incSame.output}`);
    const overlayBytes = statSync(incPath).size;
    log(
      `incremental: ${inc.seconds.toFixed(2)} s, ${inc.disk.bytesTransferred} bytes transferred, overlay ${overlayBytes} bytes; chain equals the source`,
    );

    const clientMBps = round(median(pairs.map((p) => p.client.MBps)), 1);
    const nbdcopyMBps = round(median(pairs.map((p) => p.nbdcopy.MBps)), 1);
    const ratio = round(median(pairs.map((p) => p.ratio)), 3);
    // The order effect, shown apart: each tool's runs that came first in their pair only.
    const firstClient = median(
      pairs.filter((p) => p.order === 'client first').map((p) => p.client.MBps),
    );
    const firstNbdcopy = median(
      pairs.filter((p) => p.order === 'nbdcopy first').map((p) => p.nbdcopy.MBps),
    );
    const ratioFirstInPair = round(firstClient / firstNbdcopy, 3);
    const incrementalToFullTime = round(inc.seconds / full.seconds, 4);
    writeResults('copy', {
      benchmark: 'copy',
      date: startedAt,
      machine: {
        cpus: os.cpus().length,
        cpu: os.cpus()[0]?.model,
        memoryGiB: round(os.totalmem() / GiB, 1),
      },
      tools: {
        qemuImg: firstLine('qemu-img', ['--version']),
        nbdcopy: firstLine('nbdcopy', ['--version']),
        node: process.version,
      },
      description:
        "One offline qcow2 source (random data in runs of 1-8 MiB, the rest holes) in the page cache. Pairs alternate the order of: the backup client process doing a full backup into a new qcow2 (wall time of the process; MB/s = bytesTransferred / time) and nbdcopy --flush between qemu-nbd exports made like the client's (source -r --shared=4, target --cache=writeback --aio=threads --shared=4, and the same environment: GLIBC_TUNABLES keeping qemu-nbd's request buffers on the heap; wall time includes qemu-img create and starting/stopping both servers; MB/s = dataBytes / time). `sync` before every timed run, then a wait until no dirty or writeback pages are left. MB = 10^6 bytes. ratio = median of per-pair client/nbdcopy MB/s (an even number of pairs, half of them in each order); ratioFirstInPair = median client MB/s over the pairs it ran first / median nbdcopy MB/s over the pairs it ran first. incrementalToFullTime: a client incremental after rewriting ~1% of the clusters with qemu-io, over the time of the full just before.",
      sizeBytes: size,
      dataBytes,
      nbdcopyConfig,
      verified: verified && { ...verified, incrementalChain: incSame.same },
      pairs,
      clientMBps,
      nbdcopyMBps,
      ratio,
      ratioFirstInPair,
      goal: { ratio: 1.0, incrementalToFullTime: 0.05 },
      incrementalToFullTime,
      incremental: {
        seconds: round(inc.seconds, 3),
        fullSeconds: round(full.seconds, 3),
        bytesTransferred: inc.disk.bytesTransferred,
        overlayBytes,
        changedClusters: changed,
        clusters,
      },
    });
    console.log(
      [
        `copy: ${gib(size)} source, ${gib(dataBytes)} data, ${PAIRS} pair(s)`,
        `  client  ${clientMBps} MB/s, nbdcopy ${nbdcopyMBps} MB/s (${nbdcopyConfig ?? '?'})`,
        `  ratio   ${ratio} (goal 1.0); each tool first in its pair: ${ratioFirstInPair}`,
        `  incremental ${inc.seconds.toFixed(2)} s / full ${full.seconds.toFixed(2)} s = ${incrementalToFullTime} (goal 0.05); ${changed} clusters changed, ${inc.disk.bytesTransferred} bytes transferred, overlay ${overlayBytes} bytes`,
      ].join('\n'),
    );
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    killServers();
    rmSync(dir, { recursive: true, force: true });
  }
}
