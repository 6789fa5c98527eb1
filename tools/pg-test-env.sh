#!/usr/bin/env bash
# Prints `export SWITCHYARD_TEST_PG_URL=…`: a PostgreSQL server on loopback on which the tests
# create one fresh database per test. Use as `eval "$(bash tools/pg-test-env.sh)"`.
#
# - If SWITCHYARD_TEST_PG_URL is already set, it is kept.
# - Otherwise Debian's PostgreSQL (package `postgresql`) is used: its first cluster is started
#   if it is down, and a login role `switchyard_test` (allowed to create databases) is created
#   once. Needs root or sudo to act as the `postgres` user.
set -euo pipefail

if [ -n "${SWITCHYARD_TEST_PG_URL:-}" ]; then
  printf "export SWITCHYARD_TEST_PG_URL='%s'\n" "$SWITCHYARD_TEST_PG_URL"
  exit 0
fi
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "pg-test-env: PostgreSQL is not installed (Debian: apt-get install postgresql)," \
       "or set SWITCHYARD_TEST_PG_URL to a server the tests may create databases on" >&2
  exit 1
fi
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1) || true
if [ -z "${version:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  cluster=main
  pg_createcluster "$version" "$cluster" >&2
  read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1)
fi
if [ "$status" != online ]; then
  pg_ctlcluster "$version" "$cluster" start >&2
fi
as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 -c "
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'switchyard_test') THEN
    CREATE ROLE switchyard_test LOGIN CREATEDB PASSWORD 'switchyard_test';
  END IF;
END \$\$;" >&2
printf "export SWITCHYARD_TEST_PG_URL='postgres://switchyard_test:switchyard_test@127.0.0.1:%s/postgres'\n" "$port"
