#!/usr/bin/env bash
# Initialises the cluster on first start (UTF-8, scram-sha-256 over TCP), runs
# /docker-entrypoint-initdb.d/*.sql|*.sh once, then runs postgres as the postgres user.
set -Eeuo pipefail

# VAR or VAR_FILE (Docker/Compose secrets), never both.
file_env() {
  local var=$1 file_var="${1}_FILE" default=${2:-}
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    echo "entrypoint: both $var and $file_var are set; use one" >&2
    exit 1
  fi
  local value=$default
  if [ -n "${!var:-}" ]; then value=${!var}; elif [ -n "${!file_var:-}" ]; then value=$(<"${!file_var}"); fi
  export "$var"="$value"
  unset "$file_var"
}

# The pgBackRest repository passphrase, from a file secret into conf.d (0600, postgres),
# for the server and for one-off pgbackrest commands alike.
if [ -n "${PGBACKREST_CIPHER_PASS_FILE:-}" ]; then
  if [ ! -s "$PGBACKREST_CIPHER_PASS_FILE" ]; then
    echo "entrypoint: PGBACKREST_CIPHER_PASS_FILE $PGBACKREST_CIPHER_PASS_FILE is missing or empty" >&2
    exit 1
  fi
  umask 077
  printf '[global]\nrepo1-cipher-pass=%s\n' "$(<"$PGBACKREST_CIPHER_PASS_FILE")" \
    >/etc/pgbackrest/conf.d/cipher.conf
  [ "$(id -u)" = 0 ] && chown postgres:postgres /etc/pgbackrest/conf.d/cipher.conf
  umask 022
  unset PGBACKREST_CIPHER_PASS_FILE
fi

if [ "${1:-}" = postgres ] || [ "${1:0:1}" = - ]; then
  [ "${1:-}" = postgres ] && shift
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
  fi

  file_env POSTGRES_USER postgres
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_DB "$POSTGRES_USER"

  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "$POSTGRES_PASSWORD" ]; then
      echo "entrypoint: the database is uninitialised and POSTGRES_PASSWORD(_FILE) is not set" >&2
      exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # A temporary server on the socket only, so nothing sees it ready half-initialised.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --no-password)
    if [ "$POSTGRES_DB" != postgres ]; then
      "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
      case "$f" in
        *.sh) echo "entrypoint: running $f"; . "$f" ;;
        *.sql) echo "entrypoint: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
        *) ;;
      esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "entrypoint: PostgreSQL init process complete; ready for start up."
  fi
  unset POSTGRES_PASSWORD
  exec postgres -c listen_addresses='*' "$@"
fi

exec "$@"
