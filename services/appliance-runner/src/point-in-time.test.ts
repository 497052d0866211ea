import type { JobView } from '@tidemark/shared';
import {
  ASKS_BEFORE_GIVING_UP,
  judgePointInTime,
  pointInTimeChecks,
  type PointInTimeVerdict,
} from './point-in-time';

type Answer = JobView | 'unknown' | 'unavailable';

const recorded = (status: JobView['status'], errorCode: string | null = null): JobView =>
  ({ jobId: 'job-1', status, errorCode }) as JobView;

describe("an attempt's point in time against its job's life", () => {
  it('given the job still open (or not yet known to the ledger), then the point was inside it', () => {
    for (const answer of [recorded('queued'), recorded('running'), 'unknown'] as Answer[])
      expect(judgePointInTime(answer)).toEqual({ kind: 'inside' });
  });

  it('given the job ended in any way, then the point may be after its end, and the why says how', () => {
    expect(judgePointInTime(recorded('failed', 'LEASE_EXPIRED'))).toEqual({
      kind: 'after-end',
      why: 'the job had ended (failed LEASE_EXPIRED) when this attempt took its point in time',
    });
    expect(judgePointInTime(recorded('cancelled'))).toMatchObject({
      kind: 'after-end',
      why: expect.stringContaining('(cancelled)'),
    });
    expect(judgePointInTime(recorded('completed'))).toMatchObject({
      kind: 'after-end',
      why: expect.stringContaining('completed by another attempt'),
    });
  });

  it('given no answer, then it asks again', () => {
    expect(judgePointInTime('unavailable')).toBeNull();
  });
});

describe('the checks of one attempt', () => {
  /** Checks whose ledger gives `answers` in turn (the last one for ever). */
  const checks = (answers: Answer[], giveUp = () => false) => {
    const asked: number[] = [];
    const ended: string[] = [];
    const c = pointInTimeChecks({
      ask: async () => {
        asked.push(asked.length);
        return answers[Math.min(asked.length - 1, answers.length - 1)] as Answer;
      },
      giveUp,
      onAfterEnd: (why) => ended.push(why),
      sleep: async () => undefined,
    });
    return { c, asked, ended };
  };

  it('given each disk reported open, then the verdict is inside, one ask per disk', async () => {
    const { c, asked, ended } = checks([recorded('running')]);
    c.taken('d0');
    c.taken('d1');
    c.taken('d0'); // a line repeated is one check
    await expect(c.verdict(['d0', 'd1'])).resolves.toEqual({ kind: 'inside' });
    expect(asked).toHaveLength(2);
    expect(ended).toEqual([]);
    expect(c.ended()).toBeUndefined();
  });

  it('given a disk the client never reported, then it is checked when the verdict is asked', async () => {
    const { c, asked } = checks([recorded('failed', 'LEASE_EXPIRED')]);
    const verdict: PointInTimeVerdict = await c.verdict(['d0']);
    expect(verdict.kind).toBe('after-end');
    expect(asked).toHaveLength(1);
  });

  it('given the job ended, then the copy is stopped once, at the first check that finds it', async () => {
    const { c, ended } = checks([recorded('failed', 'LEASE_EXPIRED')]);
    c.taken('d0');
    c.taken('d1');
    await expect(c.verdict(['d0', 'd1'])).resolves.toMatchObject({ kind: 'after-end' });
    expect(ended).toHaveLength(1);
    expect(c.ended()).toMatch(/LEASE_EXPIRED/);
  });

  it('given a ledger that answers late, then it waits for the answer', async () => {
    const { c, asked } = checks(['unavailable', 'unavailable', recorded('running')]);
    await expect(c.verdict(['d0'])).resolves.toEqual({ kind: 'inside' });
    expect(asked).toHaveLength(3);
  });

  it('given a silent ledger and a runner that keeps running, then it never decides alone', async () => {
    let calls = 0;
    const { c } = checks(['unavailable'], () => ++calls > 3 * ASKS_BEFORE_GIVING_UP);
    // Gives up only once the runner stops (here: after many asks), never on silence alone.
    await expect(c.verdict(['d0'])).resolves.toMatchObject({ kind: 'unverified' });
    expect(calls).toBeGreaterThan(3 * ASKS_BEFORE_GIVING_UP);
  });

  it('given an ask that throws, then it is asked again like silence', async () => {
    let n = 0;
    const c = pointInTimeChecks({
      ask: async () => {
        if (++n < 3) throw new Error('no responders');
        return recorded('queued');
      },
      giveUp: () => false,
      onAfterEnd: () => undefined,
      sleep: async () => undefined,
    });
    await expect(c.verdict(['d0'])).resolves.toEqual({ kind: 'inside' });
  });
});
