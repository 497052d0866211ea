import { createLogger } from '@tidemark/shared';
import { loadConfig } from './config';
import { startLedger } from './ledger';

async function run(): Promise<void> {
  const config = loadConfig();
  const log = createLogger('ledger', config.TIDEMARK_LOG_LEVEL);
  const ledger = await startLedger(config, log);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      log.info({ signal }, 'stopping');
      ledger.stop().then(
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
  createLogger('ledger').fatal({ err }, 'ledger failed to start');
  process.exit(1);
});
