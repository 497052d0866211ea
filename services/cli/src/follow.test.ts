import { PassThrough } from 'node:stream';
import type { JobStatus } from '@tidemark/shared';
import { ApiError, HubUnreachableError, type Job, type JobProgress } from './api';
import { followJob, type ProgressStream } from './follow';

function job(status: JobStatus, progress: Partial<JobProgress> | null = null): Job {
  return {
    backup_id: 'backup-1',
    job_type: 'backup',
    vm_name: 'pg01',
    backup_type: 'full',
    repository_id: 'repo-1',
    policy_id: null,
    parent_backup_id: null,
    status,
    change_id: null,
    bytes_transferred: null,
    error_code: null,
    error_message: null,
    retryable: null,
    progress: progress && {
      phase: 'copying',
      sequence: 0,
      bytes_done: 0,
      bytes_total: 4 * 2 ** 30,
      bytes_per_second: 100 * 2 ** 20,
      ...progress,
    },
    created_at: '2025-01-01T00:00:00.000Z',
    started_at: null,
    completed_at: null,
    disks: [],
  };
}

/** A non-TTY stream that keeps what was written. */
function capture(isTTY = false): { stream: ProgressStream; text: () => string } {
  const stream = Object.assign(new PassThrough(), { isTTY, columns: 120 });
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return { stream, text: () => text };
}

/** Answers each poll with the next entry: a job, or an error to throw. */
function script(answers: (Job | Error)[]) {
  let polls = 0;
  const getJob = jest.fn(async () => {
    const answer = answers[Math.min(polls++, answers.length - 1)];
    if (answer instanceof Error) throw answer;
    return answer;
  });
  return getJob;
}

const noWait = { sleep: async () => undefined };

describe('followJob', () => {
  it('polls until the job completes and writes one plain line per change off a terminal', async () => {
    const out = capture();
    const getJob = script([
      job('queued'),
      job('queued'),
      job('running', { bytes_done: 2 ** 30 }),
      job('running', { bytes_done: 2 ** 30 }),
      job('running', { sequence: 1, bytes_done: 2 * 2 ** 30 }),
      job('completed'),
    ]);
    const ended = await followJob(getJob, out.stream, noWait);
    expect(ended.status).toBe('completed');
    expect(getJob).toHaveBeenCalledTimes(6);
    expect(out.text().split('\n')).toEqual([
      'backup-1 queued',
      'backup-1 running copying 1.0 GiB / 4.0 GiB (25%) 100.0 MiB/s ETA 31s',
      'backup-1 running copying 2.0 GiB / 4.0 GiB (50%) 100.0 MiB/s ETA 20s',
      'backup-1 completed',
      '',
    ]);
  });

  it.each(['failed', 'cancelled'] as const)('returns a %s job as it ended', async (status) => {
    const out = capture();
    const ended = await followJob(script([job('running'), job(status)]), out.stream, noWait);
    expect(ended.status).toBe(status);
    expect(out.text()).toBe(`backup-1 running\nbackup-1 ${status}\n`);
  });

  it('waits between polls', async () => {
    const sleep = jest.fn(async () => undefined);
    await followJob(script([job('queued'), job('running'), job('completed')]), capture().stream, {
      sleep,
      intervalMs: 500,
    });
    expect(sleep.mock.calls).toEqual([[500], [500]]);
  });

  it('rides out a short hub outage (503 or no answer)', async () => {
    const getJob = script([
      job('running'),
      new ApiError(503, 'the ledger did not answer', [], 5),
      new HubUnreachableError('http://hub', 'connection refused (ECONNREFUSED)'),
      job('completed'),
    ]);
    const ended = await followJob(getJob, capture().stream, noWait);
    expect(ended.status).toBe('completed');
  });

  it('gives up when the hub stays unavailable longer than its patience', async () => {
    let clock = 0;
    const down = new HubUnreachableError('http://hub', 'connection refused (ECONNREFUSED)');
    const getJob = script([job('running'), down]);
    const following = followJob(getJob, capture().stream, {
      intervalMs: 500,
      patienceMs: 5000,
      now: () => clock,
      sleep: async (ms) => {
        clock += ms;
      },
    });
    await expect(following).rejects.toBe(down);
    // One good poll, then failures for 5 s of the fake clock.
    expect(getJob).toHaveBeenCalledTimes(12);
  });

  it('stops at once on an error that waiting will not fix', async () => {
    const gone = new ApiError(404, 'backup backup-1 not found');
    await expect(followJob(script([job('running'), gone]), capture().stream, noWait)).rejects.toBe(
      gone,
    );
  });

  it('draws a bar on a terminal, ending full when the job completes', async () => {
    const out = capture(true);
    await followJob(
      script([job('running', { bytes_done: 2 ** 30 }), { ...job('completed'), progress: null }]),
      out.stream,
      noWait,
    );
    expect(out.text()).toContain('100% | 4.0 GiB / 4.0 GiB');
    expect(out.text()).toContain('completed [');
  });
});
