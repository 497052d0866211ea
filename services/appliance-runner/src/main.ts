import { createLogger } from '@tidemark/shared';
import { loadConfig } from './config';
import { startRunner } from './runner';

async function run(): Promise<void> {
  const config = loadConfig();
  const log = createLogger('appliance-runner', config.TIDEMARK_LOG_LEVEL);
  const runner = await startRunner(config, log);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      log.info({ signal }, 'stopping');
      runner.stop().then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err }, 'unclean stop');
          process.exit(1);
        },
      );
    });
  }
}

run().catch((err: unknown) => {
  createLogger('appliance-runner').fatal({ err }, 'appliance-runner failed to start');
  process.exit(1);
});
