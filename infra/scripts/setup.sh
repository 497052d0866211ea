#!/usr/bin/env bash
# Prepares a fresh machine of this kind for the tests and the demo: Debian packages (among them
# docker-compose and the qemu tools), a running Docker engine, the local stand-in images for
# NATS, MariaDB, Node.js and Node.js with qemu (used where no image registry is reachable), and
# the npm packages. Idempotent: a second run takes a few seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

infra/scripts/install-deps.sh
infra/scripts/start-docker.sh
infra/images/build-standins.sh
# Not `npm ci`: the registry these machines reach lacks some other platforms' optional
# binaries (e.g. @swc/core-darwin-arm64), which npm ci insists on finding in the lock file.
# `npm install` installs exactly the locked versions it can have and leaves the lock alone.
npm install --no-audit --no-fund
