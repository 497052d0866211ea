#!/usr/bin/env node
// `tidemark`: the command line client of the hub's REST API. This file only wires commander to
// the commands and turns errors into messages and exit codes.
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { api, jobStatuses, type JobStatus, type JobType } from '@tidemark/shared';
import { ApiError, createHubApi, HubUnreachableError, type VmDisk } from './api';
import * as commands from './commands';
import { DEFAULT_HUB_URL, resolveConfig } from './config';
import { ExitCode, JobEndedError, UsageError } from './errors';

/** Built from the global flags of the command that runs. */
function context(cmd: Command): commands.Context {
  const config = resolveConfig(cmd.optsWithGlobals());
  return {
    api: createHubApi({ url: config.url, token: config.token }),
    json: config.json,
    stdout: process.stdout,
    stderr: process.stderr,
  };
}

/** `--disk disk-0=/var/lib/vms/pg01.qcow2`, repeatable. */
function collectDisk(spec: string, previous: VmDisk[] | undefined): VmDisk[] {
  const at = spec.indexOf('=');
  if (at <= 0 || at === spec.length - 1) {
    throw new InvalidArgumentError('expected <disk_key>=<path>, e.g. disk-0=/var/lib/vms/a.qcow2');
  }
  const disk: VmDisk = { disk_key: spec.slice(0, at), driver: 'qemu', path: spec.slice(at + 1) };
  return [...(previous ?? []), disk];
}

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError('expected a whole number of at least 1');
  }
  return n;
}

interface StartOptions {
  repo: string;
  type: api.RequestedBackupType;
  policy?: string;
  follow?: boolean;
}

/** `backup cancel` and `replicate cancel`. */
function addCancelCommand(parent: Command, jobType: JobType): void {
  parent
    .command('cancel')
    .description(`stop a queued or running ${jobType}; it ends cancelled`)
    .argument(jobType === 'backup' ? '<backup_id>' : '<job_id>')
    .option('--reason <text>', "kept in the job's record")
    .action((jobId: string, opts: { reason?: string }, cmd: Command) =>
      commands.cancelJob(context(cmd), jobType, jobId, opts.reason),
    );
}

/** `backup start` and `replicate start` take the same arguments. */
function addStartCommand(parent: Command, jobType: JobType): void {
  parent
    .command('start')
    .description(`start a ${jobType} of a VM's disks`)
    .argument('<vm_name>')
    .requiredOption('--repo <repository_id>', 'repository to write into')
    .addOption(
      new Option('--type <type>', 'full, incremental, or auto (incremental when a chain exists)')
        .choices(api.requestedBackupTypes)
        .default('auto'),
    )
    .option('--policy <policy_id>', 'policy the job runs under')
    .option('--follow', 'show progress until the job ends; exit 1 if it fails, 3 if cancelled')
    .action((vmName: string, opts: StartOptions, cmd: Command) =>
      commands.startJob(
        context(cmd),
        jobType,
        {
          vm_name: vmName,
          repository_id: opts.repo,
          backup_type: opts.type,
          ...(opts.policy === undefined ? {} : { policy_id: opts.policy }),
        },
        opts.follow === true,
      ),
    );
}

function buildProgram(): Command {
  const program = new Command('tidemark')
    .description('Tidemark: block-level VM backups. A client of the hub REST API.')
    // Set before the subcommands exist, so they inherit them.
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .option('--url <url>', `hub base URL (env TIDEMARK_URL; default ${DEFAULT_HUB_URL})`)
    .option('--token <token>', 'API token, sent as a bearer token (env TIDEMARK_API_TOKEN)')
    .option('--json', "print the API's JSON as is instead of tables");

  const vm = program.command('vm').description('register and list VMs');
  vm.command('add')
    .description('register a VM and its disks (driver qemu)')
    .argument('<vm_name>')
    .requiredOption('--disk <disk_key=path>', 'a disk of the VM; repeat for each disk', collectDisk)
    .action((vmName: string, opts: { disk: VmDisk[] }, cmd: Command) =>
      commands.addVm(context(cmd), vmName, opts.disk),
    );
  vm.command('list')
    .description('list registered VMs')
    .action((_opts: unknown, cmd: Command) => commands.listVms(context(cmd)));

  const repo = program.command('repo').description('create and list repositories');
  repo
    .command('add')
    .description('create a repository: where backups are written')
    .argument('<name>')
    .argument('<path>', 'absolute directory path')
    .action((name: string, path: string, _opts: unknown, cmd: Command) =>
      commands.addRepository(context(cmd), name, path),
    );
  repo
    .command('list')
    .description('list repositories')
    .action((_opts: unknown, cmd: Command) => commands.listRepositories(context(cmd)));

  const policy = program.command('policy').description('create and list backup policies');
  policy
    .command('add')
    .description('create a policy')
    .argument('<name>')
    .option('--schedule <cron>', 'cron expression, e.g. "0 2 * * *"')
    .option('--retention <n>', 'number of backups to keep', positiveInteger)
    .action((name: string, opts: { schedule?: string; retention?: number }, cmd: Command) =>
      commands.addPolicy(context(cmd), {
        name,
        schedule: opts.schedule ?? null,
        retention_count: opts.retention ?? null,
      }),
    );
  policy
    .command('list')
    .description('list policies')
    .action((_opts: unknown, cmd: Command) => commands.listPolicies(context(cmd)));

  const backup = program.command('backup').description('start, cancel, show and list backups');
  addStartCommand(backup, 'backup');
  addCancelCommand(backup, 'backup');
  backup
    .command('show')
    .description('show a job: status, progress, per-disk change_ids')
    .argument('<backup_id>')
    .action((id: string, _opts: unknown, cmd: Command) =>
      commands.showJob(context(cmd), 'backup', id),
    );
  backup
    .command('list')
    .description('list backups, newest first')
    .option('--vm <vm_name>', 'only this VM')
    .addOption(new Option('--status <status>', 'only this status').choices(jobStatuses))
    .option('--limit <n>', 'at most n backups', positiveInteger)
    .action((opts: { vm?: string; status?: JobStatus; limit?: number }, cmd: Command) =>
      commands.listBackups(context(cmd), {
        vm_name: opts.vm,
        status: opts.status,
        limit: opts.limit,
      }),
    );

  const replicate = program.command('replicate').description('start, cancel and show replications');
  addStartCommand(replicate, 'replication');
  addCancelCommand(replicate, 'replication');
  replicate
    .command('show')
    .description('show a replication job')
    .argument('<job_id>')
    .action((id: string, _opts: unknown, cmd: Command) =>
      commands.showJob(context(cmd), 'replication', id),
    );

  return program;
}

/** Prints what went wrong to stderr and gives the exit code. */
function report(err: unknown): ExitCode {
  const say = (line: string) => process.stderr.write(`${line}\n`);
  if (err instanceof CommanderError) {
    // commander has already printed its message (or the help).
    return err.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
  }
  if (err instanceof UsageError) {
    say(`error: ${err.message}`);
    return ExitCode.Usage;
  }
  if (err instanceof ApiError) {
    say(`error: ${err.message}`);
    for (const d of err.details) say(`  ${d.path ? `${d.path}: ` : ''}${d.message}`);
    if (err.retryAfterSeconds !== null)
      say(`  (the hub asks to retry in ${err.retryAfterSeconds} s)`);
    return ExitCode.Failure;
  }
  if (err instanceof HubUnreachableError) {
    say(`error: ${err.message}`);
    return ExitCode.Failure;
  }
  if (err instanceof JobEndedError) {
    say(err.message);
    return err.exitCode;
  }
  say(
    `error: unexpected failure: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
  );
  return ExitCode.Failure;
}

async function run(): Promise<void> {
  await buildProgram().parseAsync(process.argv);
}

run().catch((err: unknown) => {
  process.exitCode = report(err);
});
