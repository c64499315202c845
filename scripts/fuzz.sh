#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer). `make test` runs each for a few
# seconds (--smoke) to keep them building and honest; `make fuzz` runs each for
# FUZZ_RUNS executions (default 10 million) or FUZZ_SECONDS (default 1800), whichever ends
# first. Every input in fuzz/regressions/<target>/ (each crash found, kept) is replayed first.
#
# Only a stable toolchain exists here: cargo-fuzz needs nightly flags (-Zsanitizer), which
# RUSTC_BOOTSTRAP=1 enables on stable. cargo-fuzz is installed from crates.io if missing.
set -euo pipefail

say() { echo "[fuzz] $*"; }
cd "$(dirname "$0")/../fuzz"

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  say "cargo-fuzz $CARGO_FUZZ_VERSION is not installed: installing it from crates.io (a few minutes)"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi
command -v c++ >/dev/null 2>&1 || { say "libFuzzer needs a C++ compiler (apt-get install g++)" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1

mode=${1:-long}
# Smoke runs build faster (16 codegen units); long runs build as cargo-fuzz does by default.
build=()
[ "$mode" = "--smoke" ] && build=(--codegen-units 16)
targets=$(cargo fuzz list)
say "building $(echo "$targets" | wc -l) targets (address sanitizer, release${build:+, ${build[*]}})"
cargo fuzz build "${build[@]}"

for t in $targets; do
  if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
    say "$t: replaying $(ls "regressions/$t" | wc -l) regression input(s)"
    cargo fuzz run "${build[@]}" "$t" "regressions/$t"/* -- -runs=1 >/dev/null
  fi
  if [ "$mode" = "--smoke" ]; then
    args=(-max_total_time=5)
  else
    args=(-runs="${FUZZ_RUNS:-10000000}" -max_total_time="${FUZZ_SECONDS:-1800}" -print_final_stats=1)
  fi
  say "$t: ${args[*]}"
  # A fresh corpus each time in smoke mode, so the run does not depend on the machine's past.
  corpus=corpus/$t
  [ "$mode" = "--smoke" ] && corpus=$(mktemp -d)
  # libFuzzer refuses a corpus directory that does not exist (a fresh clone has none).
  mkdir -p "$corpus"
  if ! cargo fuzz run "${build[@]}" "$t" "$corpus" -- "${args[@]}" -rss_limit_mb=2048 2>"target/$t.log"; then
    tail -40 "target/$t.log" >&2
    say "$t FAILED: the crashing input is in fuzz/artifacts/$t/; copy it to fuzz/regressions/$t/ once fixed" >&2
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units|cov:" "target/$t.log" | tail -2 | sed "s/^/[fuzz] $t: /"
  [ "$mode" = "--smoke" ] && rm -rf "$corpus"
done
say "ok: every target ran without a crash"
