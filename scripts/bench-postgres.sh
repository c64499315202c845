#!/usr/bin/env bash
# The `postgres` source's poll on job tables of a million rows (nearly all finished, about 3,000
# unfinished across 20 queues) for pg-boss, Oban, River and GoodJob: each statement the adapter
# sends under EXPLAIN (ANALYZE, BUFFERS), checked not to read the finished rows, and the poll
# timed against the same statements from psql (one session with \timing, and a process per
# query) and from a bare tokio-postgres client, in one run (benches/postgres.rs; figures in
# BENCHMARKS.md). Not part of `make test` (which runs the bench once on 20,000 rows a library).
#
# Usage: scripts/bench-postgres.sh [--rows N] [--polls N] [--full-plans]
# Makes sure PostgreSQL runs (scripts/ensure-postgres.sh) and pg-boss is installed
# (scripts/ensure-job-libraries.sh postgres); works in a scratch database qma_bench_<pid>,
# dropped at the end. Writes the report to target/bench-postgres.md as well as to the terminal.
# Exits 1 when a statement reads the finished rows.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[bench-postgres] $*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
    --rows) export QMA_BENCH_PG_ROWS=$2; shift 2 ;;
    --polls) export QMA_BENCH_PG_POLLS=$2; shift 2 ;;
    --full-plans) export QMA_BENCH_PG_FULL_PLANS=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

scripts/ensure-postgres.sh >&2
scripts/ensure-job-libraries.sh postgres >&2

say "cargo bench --bench postgres (${QMA_BENCH_PG_ROWS:-1000000} rows a library; loading takes a few minutes)"
mkdir -p target
status=0
cargo bench --bench postgres | tee target/bench-postgres.md || status=$?
say "report in target/bench-postgres.md"
exit $status
