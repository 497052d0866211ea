#!/bin/sh
# Entrypoint of tidemark/mariadb-standin (busybox sh): the part of the official mysql/mariadb
# images' entrypoint the tests rely on. The datadir was seeded at build time (root@localhost,
# no password). On first start this sets the root password, adds root@'%' and creates the
# database in a --bootstrap run, which opens no port; only then does the real server start, so
# its "ready for connections" means the database is ready.
set -eu

# Like the official images: `docker run IMAGE --option` passes the options to the server,
# any other command (e.g. `sh`) runs instead of it.
if [ "${1#-}" != "$1" ]; then set -- mariadbd "$@"; fi
case "$1" in
  mariadbd | mysqld) shift ;;
  *) exec "$@" ;;
esac

# Defaults first, so options given to the container override them.
set -- --user=root --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
  --bind-address=0.0.0.0 --port=3306 --innodb-log-file-size=8M --skip-name-resolve "$@"
marker=/var/lib/mysql/.standin-initialised

# SQL literals: double quotes inside, and backslashes (an escape in MariaDB's default sql_mode).
lit() { printf "'%s'" "$(printf %s "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"; }
# shellcheck disable=SC2016 # the backquotes are SQL, not command substitution
ident() { printf '`%s`' "$(printf %s "$1" | sed 's/`/``/g')"; }

if [ ! -e "$marker" ]; then
  root_pw=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
  allow_empty=${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-${MYSQL_ALLOW_EMPTY_PASSWORD:-}}
  database=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
  user=${MARIADB_USER:-${MYSQL_USER:-}}
  password=${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}
  if [ -z "$root_pw" ] && [ -z "$allow_empty" ]; then
    echo 'standin: set MYSQL_ROOT_PASSWORD or MYSQL_ALLOW_EMPTY_PASSWORD (or MARIADB_*)' >&2
    exit 1
  fi
  {
    # --bootstrap starts without the grant tables; load them so account statements work.
    echo 'FLUSH PRIVILEGES;'
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $(lit "$root_pw");"
    echo "CREATE USER 'root'@'%' IDENTIFIED BY $(lit "$root_pw");"
    # The seed's password-less root@127.0.0.1 and root@::1 would bypass the password over TCP.
    echo "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1';"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    if [ -n "$database" ]; then
      echo "CREATE DATABASE IF NOT EXISTS $(ident "$database");"
    fi
    if [ -n "$user" ]; then
      echo "CREATE USER $(lit "$user")@'%' IDENTIFIED BY $(lit "$password");"
      if [ -n "$database" ]; then
        echo "GRANT ALL ON $(ident "$database").* TO $(lit "$user")@'%';"
      fi
    fi
  } >/tmp/init.sql
  echo 'standin: first start, initialising accounts and database'
  mariadbd "$@" --bootstrap </tmp/init.sql
  rm -f /tmp/init.sql
  touch "$marker"
fi

exec mariadbd "$@"
