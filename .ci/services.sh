#!/usr/bin/env bash
# The servers the tests use, up and answering: PostgreSQL (5432) and MariaDB (3306), each
# with a `test` database, Redis (6379) and RabbitMQ (5672, guest/guest), all on 127.0.0.1. Starts whichever is down,
# waits for it (bounded by SERVICES_WAIT, default 60 s) and fails loudly if it does not
# answer: the store and example tests never skip a missing server. Idempotent; quick when all run.
set -euo pipefail

HOST=127.0.0.1
WAIT=${SERVICES_WAIT:-60}

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: FAILED: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

pg_up() {
    if have pg_isready; then pg_isready -q -h "$HOST" -p 5432 -t 2; else tcp_open 5432; fi
}
mariadb_up() {
    if have mariadb-admin; then
        mariadb-admin -h"$HOST" -P3306 -uroot --connect-timeout=2 ping >/dev/null 2>&1
    else
        tcp_open 3306
    fi
}
redis_up() {
    if have redis-cli; then [ "$(redis-cli -h "$HOST" -p 6379 ping 2>/dev/null)" = PONG ]; else tcp_open 6379; fi
}
rabbitmq_up() {
    # The AMQP port is what the tests use; rabbitmq-diagnostics alone can answer before it
    # listens (and takes seconds to start), so the port decides.
    tcp_open 5672
}

pg_start() {
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] || die "PostgreSQL is not installed (no /etc/postgresql/<version>)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
}
mariadb_start() {
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}
redis_start() {
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
}
rabbitmq_start() {
    have rabbitmq-server || die "RabbitMQ is not installed (no rabbitmq-server)"
    rabbitmq-server -detached
}

# ensure NAME: start NAME if it does not answer, then wait until it does.
ensure() {
    local name=$1 deadline
    if "${name}_up"; then
        say "$name is up"
        return
    fi
    say "$name is down; starting it"
    "${name}_start" || say "$name: the start command failed; waiting for it anyway"
    deadline=$((SECONDS + WAIT))
    until "${name}_up"; do
        if ((SECONDS >= deadline)); then
            die "$name does not answer on $HOST after ${WAIT}s"
        fi
        sleep 0.5
    done
    say "$name is up (started)"
}

ensure pg
ensure mariadb
ensure redis
ensure rabbitmq

# The `test` databases the store tests use.
if ! psql -h "$HOST" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" |
    grep -q 1; then
    psql -h "$HOST" -U postgres -d postgres -qc 'CREATE DATABASE test' ||
        die "cannot create the PostgreSQL database 'test'"
    say "created the PostgreSQL database 'test'"
fi
mariadb -h"$HOST" -uroot -e 'CREATE DATABASE IF NOT EXISTS test' ||
    die "cannot create the MariaDB database 'test'"
say "PostgreSQL, MariaDB, Redis and RabbitMQ are ready"
