#!/usr/bin/env bash
# Prepares a fresh machine of this kind for the tests and the demo: Debian packages, a running
# Docker engine, the local stand-in images for NATS and MariaDB (used where no image registry
# is reachable), and the npm packages. Idempotent: a second run takes a few seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

infra/scripts/install-deps.sh
infra/scripts/start-docker.sh
infra/images/build-standins.sh
npm ci --no-audit --no-fund
