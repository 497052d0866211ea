// Health checks of the services' containers (docker-compose.yml), run inside the container
// with its environment: node /app/healthcheck.js hub|ledger|runner. Exit 0 means healthy.
//   hub     GET /healthz on the hub's port answers {"status":"ok"}.
//   ledger  the ledger answers a query over NATS (jobs.get of a job that does not exist): its
//           "not found" comes from a MySQL lookup, so NATS, the query service and the
//           database all work.
//   runner  the NATS server (monitoring endpoint TIDEMARK_NATS_MONITOR_URL, /connz) has this
//           container's runner connected and subscribed to backup.cancel, which the runner
//           does only after its streams and its durable consumer are set up.
'use strict';
/* global fetch, AbortSignal, setTimeout */
const { hostname } = require('node:os');

const TIMEOUT_MS = 3000;
const env = process.env;

async function hub() {
  const res = await fetch(`http://127.0.0.1:${env.TIDEMARK_HUB_PORT || 8082}/healthz`, {
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const body = await res.text();
  if (res.status !== 200 || JSON.parse(body).status !== 'ok') {
    throw new Error(`GET /healthz answered ${res.status} ${body}`);
  }
}

async function ledger() {
  const { connect } = require('@nats-io/transport-node');
  const { askLedger, busTopology, NotFoundError } = require('@tidemark/shared');
  const nc = await connect({
    servers: env.TIDEMARK_NATS_URL || 'nats://127.0.0.1:4222',
    name: 'tidemark-healthcheck',
    timeout: TIMEOUT_MS,
  });
  try {
    const topo = busTopology(env.TIDEMARK_BUS_PREFIX || '');
    await askLedger(nc, topo, 'jobs.get', { jobId: 'healthcheck-no-such-job' }, TIMEOUT_MS);
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  } finally {
    await nc.close();
  }
}

async function runner() {
  const { busTopology } = require('@tidemark/shared');
  const monitor = env.TIDEMARK_NATS_MONITOR_URL;
  if (!monitor) throw new Error('TIDEMARK_NATS_MONITOR_URL is not set');
  const res = await fetch(`${monitor.replace(/\/$/, '')}/connz?subs=1&limit=100000`, {
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  if (res.status !== 200) throw new Error(`${monitor}/connz answered ${res.status}`);
  const { connections = [] } = await res.json();
  // The runner's connection name is tidemark-runner-<TIDEMARK_RUNNER_ID>, whose default is
  // <hostname>-<pid>: this container's host name.
  const id = env.TIDEMARK_RUNNER_ID;
  const mine = connections.filter((c) =>
    id ? c.name === `tidemark-runner-${id}` : c.name?.startsWith(`tidemark-runner-${hostname()}-`),
  );
  if (mine.length === 0) throw new Error('the runner is not connected to NATS');
  const cancel = busTopology(env.TIDEMARK_BUS_PREFIX || '').subjectFor('backup.cancel');
  if (!mine.some((c) => (c.subscriptions_list ?? []).includes(cancel))) {
    throw new Error(`the runner is connected but not subscribed to ${cancel} yet`);
  }
}

const checks = { hub, ledger, runner };
const check = checks[process.argv[2]];
if (!check) {
  console.error(`usage: node healthcheck.js ${Object.keys(checks).join('|')}`);
  process.exit(2);
}
setTimeout(() => {
  console.error(`${process.argv[2]}: no answer within ${TIMEOUT_MS + 1000} ms`);
  process.exit(1);
}, TIMEOUT_MS + 1000).unref();
check().then(
  () => process.exit(0),
  (err) => {
    console.error(`${process.argv[2]}: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
