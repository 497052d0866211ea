#!/usr/bin/env bash
# Makes sure a Docker daemon answers. Nothing starts dockerd on these machines (no systemd,
# and policy-rc.d stops the package from starting it), so start it in the background here.
# Idempotent: does nothing when `docker info` already works.
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/dockerd.log}
pidfile=/var/run/docker.pid
timeout_s=30

if docker info >/dev/null 2>&1; then
  echo 'start-docker: dockerd already answers'
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo 'start-docker: dockerd not installed; run infra/scripts/install-deps.sh first' >&2
  exit 1
fi

sudo=()
((EUID == 0)) || sudo=(sudo)

# A daemon that is still starting (another caller) owns the pid file: wait for it instead of
# starting a second one. A pid file left by a dead daemon would make the new one refuse to start.
if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "start-docker: dockerd (pid $(cat "$pidfile")) is starting; waiting"
else
  "${sudo[@]}" rm -f "$pidfile"
  # setsid: the daemon outlives this script and is not hit by the caller's Ctrl-C.
  "${sudo[@]}" setsid dockerd >>"$log" 2>&1 </dev/null &
  echo "start-docker: started dockerd, log in $log"
fi

deadline=$((SECONDS + timeout_s))
until docker info >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    echo "start-docker: dockerd did not answer within ${timeout_s}s; last lines of $log:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  sleep 0.2
done
echo "start-docker: dockerd ready (pid $(cat "$pidfile" 2>/dev/null || echo '?'))"
