#!/usr/bin/env bash
# `npm run demo`: installs what the demo needs and is missing (Debian's qemu tools, the npm
# packages), builds, and runs test/demo/run.ts against the NATS and MySQL servers named by
# TIDEMARK_NATS_URL / TIDEMARK_MYSQL_URL (default: the local ones). Idempotent; needs no Docker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

infra/scripts/install-deps.sh qemu-utils qemu-system-common libnbd-bin
if [[ ! -d node_modules/typescript || package-lock.json -nt node_modules/.package-lock.json ]]; then
  # Not `npm ci`: see setup.sh.
  npm install --no-audit --no-fund
fi
npx tsc -b
exec node test/dist/demo/run.js
