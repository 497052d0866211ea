#!/usr/bin/env bash
# Installs the Debian packages the test set-up needs, skipping those already installed.
#   docker.io                 dockerd for testcontainers (no image registry: see infra/images)
#   docker-compose            the compose stack (docker-compose.yml) and its smoke test
#   busybox-static            the shell and tools inside the FROM-scratch stand-in images
#   qemu-utils libnbd-bin nbdkit qemu-system-common   the QCOW2/NBD data path (qemu-img,
#                             qemu-nbd and qemu-io come from qemu-utils, qemu-storage-daemon
#                             from qemu-system-common)
# Usage: install-deps.sh [PACKAGE...]   (no arguments: the set above)
set -euo pipefail

if (($#)); then
  packages=("$@")
else
  packages=(docker.io docker-compose busybox-static qemu-utils libnbd-bin nbdkit qemu-system-common)
fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == 'install ok installed' ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: already installed: ${packages[*]}"
  exit 0
fi

# Only refresh the package lists when there is something to install: it is the slow part.
sudo=()
((EUID == 0)) || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
