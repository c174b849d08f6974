#!/bin/sh
# Entrypoint of the local PostgreSQL stand-in (postgres.Dockerfile). On first start, with an empty PGDATA, it makes
# the cluster: superuser POSTGRES_USER (default postgres) with password POSTGRES_PASSWORD (required), password
# authentication for TCP clients, and database POSTGRES_DB (default: the user's name). Then it runs the command.
set -eu

bin=$(echo /usr/lib/postgresql/*/bin)
PATH="$bin:$PATH"
export PATH
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "error: POSTGRES_PASSWORD is not set; the cluster would have no password" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    # Other containers connect over the network, with the password; local socket connections stay trusted (they
    # come from inside this container only).
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$database" != postgres ]; then
        # On the socket only, so nothing connects before the database exists.
        pg_ctl --wait --silent --options="-c listen_addresses=''" start
        createdb --username="$user" "$database"
        pg_ctl --wait --silent --mode=fast stop
    fi
    echo "initialized $PGDATA: user $user, database $database"
fi

exec "$@"
