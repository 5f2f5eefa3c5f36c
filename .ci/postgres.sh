#!/usr/bin/env bash
# Start a PostgreSQL server on 127.0.0.1:5432 with a `windtunnel` role and database, for the test of two
# sweep workers sharing one Optuna study. Installs the server when it is missing. Never fails CI: the test
# skips with a message when no server answers.
set -u
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || {
    echo "postgres: could not install the server; its test will skip"; exit 0; }
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q "^$version main"; then
  pg_createcluster "$version" main >/dev/null 2>&1 || true
fi
pg_ctlcluster "$version" main start 2>/dev/null || service postgresql start >/dev/null 2>&1 || true
for _ in $(seq 1 20); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.5
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='windtunnel'\"" | grep -q 1 || \
  su postgres -c "psql -qc \"create role windtunnel login password 'windtunnel'\""
su postgres -c "psql -qtAc \"select 1 from pg_database where datname='windtunnel'\"" | grep -q 1 || \
  su postgres -c "psql -qc 'create database windtunnel owner windtunnel'"
echo "postgres: $(su postgres -c "psql -qtAc 'select version()'" 2>/dev/null | cut -c1-40)"
