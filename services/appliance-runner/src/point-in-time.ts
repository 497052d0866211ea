import type { JobView } from '@tidemark/shared';

/**
 * Whether an attempt's point in time fell inside its job's life. A job is open from its start
 * until the ledger ends it, and never opens again; so a check made at any moment after the
 * client took its point in time that finds the job still open proves the point was inside.
 * The earlier the check, the less a late end costs: a copy whose point was proven inside keeps
 * the rule that a real completion outranks a presumed failure (LEASE_EXPIRED, say), while a
 * copy started after the job ended (a start delivered again just as the reaper failed the job)
 * is stopped and discarded: it would be a backup point of after the job's end, beside whatever
 * job of its chain the VM has run since.
 */
export type PointInTimeVerdict =
  | { kind: 'inside' }
  /** The job had ended when asked: the point may be after its end. */
  | { kind: 'after-end'; why: string }
  /** The ledger never answered before the runner gave up (it is stopping). */
  | { kind: 'unverified'; why: string };

/** What the ledger's answer says of a point taken before it was asked; null: ask again. */
export function judgePointInTime(
  record: JobView | 'unknown' | 'unavailable',
): PointInTimeVerdict | null {
  if (record === 'unavailable') return null;
  // The ledger has not applied the start yet: the job cannot have ended.
  if (record === 'unknown') return { kind: 'inside' };
  if (record.status === 'queued' || record.status === 'running') return { kind: 'inside' };
  const how =
    record.status === 'completed'
      ? 'completed by another attempt'
      : `${record.status}${record.errorCode ? ` ${record.errorCode}` : ''}`;
  return {
    kind: 'after-end',
    why: `the job had ended (${how}) when this attempt took its point in time`,
  };
}

/** How often the ledger is asked again while it does not answer. */
export const RECHECK_MS = 1000;
/** Asks made before a stopping runner gives up on the ledger. */
export const ASKS_BEFORE_GIVING_UP = 20;

/**
 * The checks of one attempt: one per disk, started when the client says the disk's point in
 * time is taken (`taken`); `verdict` combines them, checking now any disk the client did not
 * report (a check after the copy is as sound, only later). `onAfterEnd` is called once, as soon
 * as one check finds the job ended, so the copy stops at once.
 */
export function pointInTimeChecks(opts: {
  ask: () => Promise<JobView | 'unknown' | 'unavailable'>;
  giveUp: () => boolean;
  onAfterEnd: (why: string) => void;
  sleep?: (ms: number) => Promise<void>;
}): {
  taken(diskKey: string): void;
  /** The combined verdict for these disks: the first that is not `inside`, else `inside`. */
  verdict(diskKeys: string[]): Promise<PointInTimeVerdict>;
  /** Set once a check found the job ended. */
  ended(): string | undefined;
} {
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const checks = new Map<string, Promise<PointInTimeVerdict>>();
  let endedWhy: string | undefined;
  const check = async (): Promise<PointInTimeVerdict> => {
    for (let asked = 1; ; asked++) {
      let judged: PointInTimeVerdict | null;
      try {
        judged = judgePointInTime(await opts.ask());
      } catch {
        judged = null; // as good as no answer
      }
      if (judged) {
        if (judged.kind === 'after-end' && endedWhy === undefined) {
          endedWhy = judged.why;
          opts.onAfterEnd(judged.why);
        }
        return judged;
      }
      if (asked >= ASKS_BEFORE_GIVING_UP && opts.giveUp())
        return {
          kind: 'unverified',
          why: 'the ledger did not say whether the job was still open at its point in time',
        };
      await sleep(RECHECK_MS);
    }
  };
  const start = (diskKey: string): Promise<PointInTimeVerdict> => {
    const running = check();
    checks.set(diskKey, running);
    return running;
  };
  return {
    taken(diskKey) {
      if (!checks.has(diskKey)) void start(diskKey);
    },
    async verdict(diskKeys) {
      const verdicts = await Promise.all(diskKeys.map((k) => checks.get(k) ?? start(k)));
      return verdicts.find((v) => v.kind !== 'inside') ?? { kind: 'inside' };
    },
    ended: () => endedWhy,
  };
}
