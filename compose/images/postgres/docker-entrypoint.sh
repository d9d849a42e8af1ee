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

# pgBackRest (server environments, docs/backups.md). Secrets arrive as files (named by
# LOREPIN_* variables: pgBackRest would read PGBACKREST_* ones as its options): the
# repository passphrase goes into conf.d, the TLS key into /etc/pgbackrest/tls, each
# readable only by postgres (pgBackRest refuses a key others can read).
# LOREPIN_BACKUP_SITE (on the database): the repository host of repo2, the second site.
# Command `backup-site`: this container is that repository host.
role=db
[ "${1:-}" = backup-site ] && role=site
if [ -n "${LOREPIN_BACKUP_TLS_KEY:-}" ] && [ "$(id -u)" = 0 ]; then
  install -d -o postgres -g postgres -m 0700 /etc/pgbackrest/tls
  install -o postgres -g postgres -m 0600 "$LOREPIN_BACKUP_TLS_CA" /etc/pgbackrest/tls/ca.crt
  install -o postgres -g postgres -m 0600 "$LOREPIN_BACKUP_TLS_CERT" /etc/pgbackrest/tls/node.crt
  install -o postgres -g postgres -m 0600 "$LOREPIN_BACKUP_TLS_KEY" /etc/pgbackrest/tls/node.key
  unset LOREPIN_BACKUP_TLS_CA LOREPIN_BACKUP_TLS_CERT LOREPIN_BACKUP_TLS_KEY
fi
tls_server() {
  printf 'tls-server-address=*\ntls-server-ca-file=/etc/pgbackrest/tls/ca.crt\n'
  printf 'tls-server-cert-file=/etc/pgbackrest/tls/node.crt\n'
  printf 'tls-server-key-file=/etc/pgbackrest/tls/node.key\ntls-server-auth=%s=lorepin\n' "$1"
}
tls_client() {  # $1: the option prefix (repo2-host, pg1-host)
  printf '%s-type=tls\n%s-ca-file=/etc/pgbackrest/tls/ca.crt\n' "$1" "$1"
  printf '%s-cert-file=/etc/pgbackrest/tls/node.crt\n%s-key-file=/etc/pgbackrest/tls/node.key\n' "$1" "$1"
}
if [ -n "${LOREPIN_BACKUP_CIPHER_FILE:-}" ]; then
  if [ ! -s "$LOREPIN_BACKUP_CIPHER_FILE" ]; then
    echo "entrypoint: LOREPIN_BACKUP_CIPHER_FILE $LOREPIN_BACKUP_CIPHER_FILE is missing or empty" >&2
    exit 1
  fi
  pass=$(<"$LOREPIN_BACKUP_CIPHER_FILE")
  umask 077
  if [ "$role" = site ]; then
    {
      printf '[global]\nrepo2-path=/var/lib/pgbackrest\nrepo2-cipher-type=aes-256-cbc\n'
      printf 'repo2-cipher-pass=%s\nrepo2-retention-full-type=count\n' "$pass"
      printf 'repo2-retention-full=9999999\ncompress-type=lz4\nprocess-max=2\nstart-fast=y\n'
      printf 'log-level-console=warn\nlog-level-stderr=error\nlog-level-file=off\n'
      printf 'lock-path=/tmp/pgbackrest\n'
      tls_server "${LOREPIN_BACKUP_DB:-db}"
      printf '\n[lorepin]\npg1-host=%s\n' "${LOREPIN_BACKUP_DB:-db}"
      tls_client pg1-host
      printf 'pg1-path=/var/lib/postgresql/data\npg1-user=lorepin\n'
      printf 'pg1-socket-path=/var/run/postgresql\n'
    } >/etc/pgbackrest/site.conf
    [ "$(id -u)" = 0 ] && chown postgres:postgres /etc/pgbackrest/site.conf
  else
    {
      printf '[global]\nrepo1-cipher-pass=%s\n' "$pass"
      if [ -n "${LOREPIN_BACKUP_SITE:-}" ]; then
        printf 'repo2-host=%s\n' "$LOREPIN_BACKUP_SITE"
        tls_client repo2-host
        printf 'repo2-cipher-type=aes-256-cbc\nrepo2-cipher-pass=%s\n' "$pass"
        printf 'repo2-retention-full-type=count\nrepo2-retention-full=9999999\n'
        tls_server "$LOREPIN_BACKUP_SITE"
      fi
    } >/etc/pgbackrest/conf.d/cipher.conf
    [ "$(id -u)" = 0 ] && chown postgres:postgres /etc/pgbackrest/conf.d/cipher.conf
  fi
  umask 022
  unset LOREPIN_BACKUP_CIPHER_FILE pass
fi

if [ "$role" = site ]; then
  [ "$(id -u)" = 0 ] && chown postgres:postgres /var/lib/pgbackrest
  # The webhook the schedule reports to: readable by postgres only, never in argv.
  if [ -n "${LOREPIN_BACKUP_WEBHOOK_FILE:-}" ] && [ -f "$LOREPIN_BACKUP_WEBHOOK_FILE" ] && [ "$(id -u)" = 0 ]; then
    install -o postgres -g postgres -m 0600 "$LOREPIN_BACKUP_WEBHOOK_FILE" /etc/pgbackrest/webhook
  fi
  unset LOREPIN_BACKUP_WEBHOOK_FILE
  if [ -n "${LOREPIN_BACKUP_SCHEDULE:-}" ]; then  # detached: the container's init adopts it
    # Its JSON lines go to the container's log (stdout), so to the central log too.
    ( setsid setpriv --reuid=postgres --regid=postgres --init-groups \
        lorepin-backup-scheduler </dev/null 2>&1 & )
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups \
    pgbackrest --config=/etc/pgbackrest/site.conf server
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

  # A database `invoke db.failover` left behind: its replica took over, so it must never
  # take writes again; `invoke db.rejoin` rebuilds it (docs/disaster-recovery.md).
  if [ -e "$PGDATA/lorepin-fenced" ]; then
    echo "entrypoint: this database was failed over ($(<"$PGDATA/lorepin-fenced")) and must not start as a primary; it comes back as a replica with \`invoke db.rejoin\` (docs/disaster-recovery.md, scenario 6)" >&2
    exit 1
  fi
  # LOREPIN_DB_FOLLOW: a streaming replica of that primary, cloned on the first start
  # (standby.signal and the primary's address land in the data directory).
  if [ ! -s "$PGDATA/PG_VERSION" ] && [ -n "${LOREPIN_DB_FOLLOW:-}" ]; then
    echo "entrypoint: cloning $LOREPIN_DB_FOLLOW into a replica (pg_basebackup)"
    PGPASSWORD=$POSTGRES_PASSWORD pg_basebackup -h "$LOREPIN_DB_FOLLOW" -U "$POSTGRES_USER" \
      -D "$PGDATA" -X stream -R -c fast
  fi

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
  # Replicas connect for streaming replication (the cluster's own user, by password).
  grep -qs '^host replication all all scram-sha-256' "$PGDATA/pg_hba.conf" \
    || echo "host replication all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ -n "${LOREPIN_BACKUP_SITE:-}" ]; then
    # The TLS server the repository host reaches this database through (its backups of
    # repo2). Detached: with `init: true` the container's init, not postgres, adopts it.
    ( setsid pgbackrest server </dev/null >/dev/null 2>&1 & )
  fi
  exec postgres -c listen_addresses='*' "$@"
fi

exec "$@"
