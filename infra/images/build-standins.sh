#!/usr/bin/env bash
# Builds the images the tests and the compose stack use where no image registry is reachable:
#   tidemark/nats-standin:local       nats-server with JetStream; used like the official `nats`
#   tidemark/mariadb-standin:local    MariaDB; honours the official mysql/mariadb images' MYSQL_*
#   tidemark/node-standin:local       Node.js (no npm); base of the ledger and hub images, used
#                                     like the official `node:20-bookworm-slim`
#   tidemark/node-qemu-standin:local  the same plus qemu-img, qemu-nbd, qemu-io and
#                                     qemu-storage-daemon; base of the appliance-runner image
# All are FROM scratch, made of the host's own Debian binaries, the libraries ldd resolves for
# them and static busybox (sh, wget, ...) for entrypoints and testcontainers' checks. Each image
# is labelled with a hash of its recipe (this script, the entrypoint, the host files it copies);
# an image whose label matches is kept, so repeated runs cost about a second.
# Needs a running dockerd (infra/scripts/start-docker.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if ! docker info >/dev/null 2>&1; then
  echo 'build-standins: docker does not answer; run infra/scripts/start-docker.sh first' >&2
  exit 1
fi
"$here/../scripts/install-deps.sh" busybox-static nats-server mariadb-server-core mariadb-client \
  ca-certificates qemu-utils qemu-system-common

label=org.tidemark.recipe
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The libraries the dynamic loader resolves for each binary (absolute paths, loader included).
libs_of() {
  local b
  for b; do ldd "$b"; done | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u
}

# Hash of everything an image is made of; file contents stand in for package versions.
recipe_hash() {
  { cat "${BASH_SOURCE[0]}" "$here/mariadb-entrypoint.sh"; sha256sum "$@"; } | sha256sum | cut -c1-16
}

# True (and says so) when an image with this recipe already exists.
up_to_date() {
  local have
  have=$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null || true)
  if [[ $have == "$2" ]]; then
    echo "build-standins: $1 is up to date (recipe $2)"
    return 0
  fi
  echo "build-standins: building $1 (recipe $2, had ${have:-none})"
  return 1
}

# A root with busybox as /bin/sh and friends, /tmp, and a passwd for root.
new_root() {
  local root=$work/$1 applet
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  while read -r applet; do
    [[ -e $root/$applet ]] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -s /bin/busybox "$root/$applet"
  done < <(/bin/busybox --list-full)
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
}

# Imports a root directory as an image (no Dockerfile builder needed) and drops the image the
# tag pointed to before, so rebuilds do not pile up dangling images.
import_root() {
  local root=$1 tag=$2 hash=$3 old
  shift 3
  old=$(docker image inspect -f '{{ .Id }}' "$tag" 2>/dev/null || true)
  local changes=(--change "LABEL $label=$hash")
  local c
  for c; do changes+=(--change "$c"); done
  tar --numeric-owner -C "$root" -cf - . | docker import "${changes[@]}" - "$tag" >/dev/null
  if [[ -n $old && $old != "$(docker image inspect -f '{{ .Id }}' "$tag")" ]]; then
    docker image rm "$old" >/dev/null 2>&1 || true # still used by a container: leave it
  fi
  echo "build-standins: built $tag, $(docker image inspect -f '{{ .Size }}' "$tag" | numfmt --to=si)B"
}

build_nats() {
  local tag=tidemark/nats-standin:local bin=/usr/sbin/nats-server hash root libs
  mapfile -t libs < <(libs_of "$bin")
  hash=$(recipe_hash "$bin" /bin/busybox "${libs[@]}")
  up_to_date "$tag" "$hash" && return 0
  new_root nats
  root=$work/nats
  cp -L --parents "${libs[@]}" "$root"
  # Where the official image has it, so the same command line works for both.
  cp "$bin" "$root/nats-server"
  # Without -sd, JetStream stores under /tmp/nats/jetstream (new_root made /tmp).
  import_root "$root" "$tag" "$hash" \
    'ENTRYPOINT ["/nats-server"]' 'CMD ["-js", "-m", "8222"]' 'EXPOSE 4222 6222 8222'
}

build_mariadb() {
  local tag=tidemark/mariadb-standin:local hash root libs share
  local bins=(/usr/sbin/mariadbd /usr/bin/mariadb /usr/bin/mariadb-admin)
  mapfile -t libs < <(libs_of "${bins[@]}")
  mapfile -t share < <(find /usr/share/mysql -type f | sort)
  hash=$(recipe_hash "${bins[@]}" /bin/busybox "${libs[@]}" "${share[@]}")
  up_to_date "$tag" "$hash" && return 0
  new_root mariadb
  root=$work/mariadb
  cp -L --parents "${bins[@]}" "${libs[@]}" "$root"
  ln -s mariadb "$root/usr/bin/mysql"
  ln -s mariadb-admin "$root/usr/bin/mysqladmin"
  ln -s mariadbd "$root/usr/sbin/mysqld"
  # A tree copy through tar: `cp -a --parents` misbehaves with Debian 12's coreutils 9.1.
  tar -C / -cf - usr/share/mysql | tar -C "$root" -xf -
  mkdir -p "$root/run/mysqld" "$root/usr/local/bin"
  cp "$here/mariadb-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  # Seed the system tables now, so a container only has to set passwords on first start.
  # --cross-bootstrap keeps this machine's host name out of the grant tables.
  if ! mariadb-install-db --no-defaults --user=root --skip-test-db \
    --auth-root-authentication-method=normal --innodb-log-file-size=8M --cross-bootstrap \
    --basedir=/usr --datadir="$root/var/lib/mysql" >"$work/install-db.log" 2>&1; then
    cat "$work/install-db.log" >&2
    exit 1
  fi
  import_root "$root" "$tag" "$hash" \
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["mariadbd"]' 'EXPOSE 3306'
}

# Node.js as the host has it (its own build links only libc and libstdc++), with the CA bundle
# for TLS to servers outside. The same root, plus `extra` binaries and their libraries, makes
# the node-qemu image.
build_node() {
  local tag=$1 hash root libs
  shift
  local bins=(/usr/bin/node "$@")
  local ca=/etc/ssl/certs/ca-certificates.crt
  mapfile -t libs < <(libs_of "${bins[@]}")
  hash=$(recipe_hash "${bins[@]}" /bin/busybox "$ca" "${libs[@]}")
  up_to_date "$tag" "$hash" && return 0
  root=$work/${tag//[^a-z0-9]/_}
  new_root "${root##*/}"
  cp -L --parents "${bins[@]}" "${libs[@]}" "$ca" "$root"
  import_root "$root" "$tag" "$hash" 'CMD ["node"]'
}

start=$SECONDS
build_nats
build_mariadb
build_node tidemark/node-standin:local
build_node tidemark/node-qemu-standin:local \
  /usr/bin/qemu-img /usr/bin/qemu-nbd /usr/bin/qemu-io /usr/bin/qemu-storage-daemon
echo "build-standins: done in $((SECONDS - start))s"
