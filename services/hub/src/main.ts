import { createLogger } from '@tidemark/shared';
import { loadConfig } from './config';
import { startHub } from './hub';

async function run(): Promise<void> {
  const config = loadConfig();
  const log = createLogger('hub', config.TIDEMARK_LOG_LEVEL);
  const hub = await startHub(config, log);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      log.info({ signal }, 'stopping');
      hub.close().then(
        () => process.exit(0),
        (err) => {
          log.error({ err }, 'unclean stop');
          process.exit(1);
        },
      );
    });
  }
}

run().catch((err) => {
  // Before the logger exists (a bad variable) this is the only way to say why.
  createLogger('hub').fatal({ err }, 'hub failed to start');
  process.exit(1);
});
