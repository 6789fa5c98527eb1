#!/usr/bin/env bash
# Prints `export SWITCHYARD_TEST_PG_URL=…`: a PostgreSQL server on loopback on which the tests
# create one fresh database per test. Use as `eval "$(bash tools/pg-test-env.sh)"`.
#
# - If SWITCHYARD_TEST_PG_URL is already set, it is kept.
# - Otherwise a private, throwaway server is run from Debian's PostgreSQL binaries (package
#   `postgresql`): its own data directory under $TMPDIR, its own free port on 127.0.0.1, fsync
#   off (test data only), a login role `switchyard_test` allowed to create databases. It never
#   touches the system's clusters, so a cluster left half-started, a busy port 5432 or a long
#   crash recovery of an old data directory cannot stop the tests. A server this script started
#   earlier is reused while it runs; otherwise the directory is wiped and made anew. As root the
#   server runs as the `postgres` user (PostgreSQL refuses to run as root).
# - On any failure it says why on stderr, with the server's log, and prints `false`, so that
#   `eval "$(…)" && cargo test` stops there instead of running the tests without a server.
set -euo pipefail

fail() {
  echo "pg-test-env: $*" >&2
  if [ -n "${dir:-}" ] && [ -f "$dir/server.log" ]; then
    echo "pg-test-env: the server's log ($dir/server.log):" >&2
    tail -n 40 "$dir/server.log" >&2 || true
  fi
  echo false
  exit 1
}
trap 'fail "a step failed (line $LINENO)"' ERR

if [ -n "${SWITCHYARD_TEST_PG_URL:-}" ]; then
  printf "export SWITCHYARD_TEST_PG_URL='%s'\n" "$SWITCHYARD_TEST_PG_URL"
  exit 0
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  fail "PostgreSQL's server is not installed (Debian: apt-get install postgresql)," \
       "or set SWITCHYARD_TEST_PG_URL to a server the tests may create databases on"
fi

if [ "$(id -u)" = 0 ]; then
  owner=postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  owner=$(id -un)
  as_owner() { "$@"; }
fi

base=${TMPDIR:-/tmp}
dir="$base/switchyard-test-pg-$owner"
port_file="$dir/port"

if [ -f "$port_file" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  port=$(cat "$port_file")
else
  if [ -d "$dir/data" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  chown "$owner" "$dir"
  chmod 700 "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
    || fail "could not find a free port on 127.0.0.1"
  as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; fail "initdb failed in $dir/data"; }
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 300 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >&2 || fail "the server did not start in $dir/data"
  echo "$port" >"$port_file"
fi

# The server may still be finishing its start when pg_ctl's status says it runs: wait for it.
for _ in $(seq 1 150); do
  if as_owner "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then break; fi
  sleep 0.2
done
as_owner "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" \
  || fail "the server on 127.0.0.1:$port does not accept connections"

as_owner "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -c "
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'switchyard_test') THEN
    CREATE ROLE switchyard_test LOGIN CREATEDB PASSWORD 'switchyard_test';
  END IF;
END \$\$;" >&2 || fail "could not create the role switchyard_test on 127.0.0.1:$port"
printf "export SWITCHYARD_TEST_PG_URL='postgres://switchyard_test:switchyard_test@127.0.0.1:%s/postgres'\n" "$port"
