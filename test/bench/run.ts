import { runCopyBench } from './copy';
import { runLedgerBench } from './ledger';

/** `npm run bench -- <name>`: runs one benchmark, prints its figures and writes results/<name>.json. */
const benches: Record<string, () => Promise<void>> = {
  ledger: runLedgerBench,
  copy: runCopyBench,
};

const name = process.argv[2];
const bench = name ? benches[name] : undefined;
if (!bench) {
  console.error(`usage: npm run bench -- <name>; benchmarks: ${Object.keys(benches).join(', ')}`);
  process.exit(2);
}
bench().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
