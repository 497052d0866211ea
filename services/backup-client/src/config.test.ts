import { ConfigError } from '@tidemark/shared';
import { loadConfig } from './config';
import { ClientEnv } from './protocol';

describe('backup client configuration', () => {
  it('has a default for everything but the job id, and takes an empty variable as unset', () => {
    const empty = Object.fromEntries(Object.values(ClientEnv).map((name) => [name, '']));
    for (const env of [{}, empty])
      expect(loadConfig(env)).toMatchObject({
        jobId: undefined,
        previousChangeIds: undefined,
        underRunner: false,
        progressIntervalMs: 1000,
        copy: { chunkSize: undefined, inFlight: undefined, maxBytesPerSecond: undefined },
        canary: { blocks: 64, blockSize: 64 * 1024 },
        logLevel: 'info',
      });
  });

  it('reads what the runner passes, in the units the copier takes', () => {
    const config = loadConfig({
      [ClientEnv.JobId]: 'job-1',
      [ClientEnv.PreviousChangeId]: ' {"d0": "u/1", "d1": null} ',
      [ClientEnv.ExitWithParent]: '1',
      [ClientEnv.CopyChunkKib]: '128',
      [ClientEnv.CopyInFlight]: '4',
      [ClientEnv.CopyMaxMbps]: '2.5',
      [ClientEnv.CanaryBlocks]: '0',
      [ClientEnv.CanarySeed]: '7',
    });
    expect(config).toMatchObject({
      jobId: 'job-1',
      previousChangeIds: { byDisk: { d0: 'u/1', d1: null } },
      underRunner: true,
      copy: { chunkSize: 128 * 1024, inFlight: 4, maxBytesPerSecond: 2_500_000 },
      canary: { blocks: 0, blockSize: 64 * 1024, seed: 7 },
    });
    expect(loadConfig({ [ClientEnv.PreviousChangeId]: 'u/7' }).previousChangeIds).toEqual({
      one: 'u/7',
    });
  });

  it('names every bad variable at once', () => {
    const attempt = () =>
      loadConfig({
        [ClientEnv.JobId]: '../x',
        [ClientEnv.PreviousChangeId]: '{"d0": 5',
        [ClientEnv.ProgressIntervalMs]: 'soon',
        [ClientEnv.CopyChunkKib]: '100',
        [ClientEnv.CopyInFlight]: '0',
        [ClientEnv.CopyMaxMbps]: '-1',
        [ClientEnv.CanaryBlockKib]: '2',
        TIDEMARK_LOG_LEVEL: 'loud',
      });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(
      expect.objectContaining({
        issues: [
          ClientEnv.JobId,
          ClientEnv.PreviousChangeId,
          ClientEnv.ProgressIntervalMs,
          ClientEnv.CopyMaxMbps,
          ClientEnv.CopyChunkKib,
          ClientEnv.CopyInFlight,
          ClientEnv.CanaryBlockKib,
          'TIDEMARK_LOG_LEVEL',
        ].map((path) => expect.objectContaining({ path })),
      }),
    );
  });
});
