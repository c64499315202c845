#!/usr/bin/env bash
# Soak (issue 18): the release binary serving 10,000 Redis lists (length + oldest age: 20,000
# series) polled every 2 s, under a steady 10,000 metric GETs a second for 10 minutes. Passes
# when every request got a 200, no poll failed, and the resident set at the end is within 5 % of
# what it was after the first minute (warm-up). Prints p50/p99/p99.9 latency (from each
# request's send), the latest a request went out after it was due (a stall), and the RSS
# samples. Not part of `make test`.
#
# Usage: scripts/soak.sh [--seconds S] [--rate R] [--lists N]   (defaults 600, 10000, 10000)
# Needs the local Redis (make services). Figures go in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[soak] $*" >&2; }

DURATION=600
RATE=10000
LISTS=10000
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) DURATION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --lists) LISTS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
scripts/ensure-redis.sh >&2
say "building the release binary and the load generator"
cargo build --release --quiet --bin queue-metrics-adapter --example fixed_rate_get
BIN=target/release/queue-metrics-adapter
LOADGEN=target/release/examples/fixed_rate_get
. scripts/lib/redis-lists-bench.sh soak

say "loading $LISTS lists"
load "$LISTS"
config "$WORK/soak.yaml" 2s 30s
start_adapter "$WORK/soak.yaml"
URL="http://127.0.0.1:$APORT/apis/external.metrics.k8s.io/v1beta1/namespaces/default/age?labelSelector=queue%3D00500"
curl -fs "$URL" >/dev/null

say "$RATE GET/s over 32 connections for $DURATION s"
"$LOADGEN" "$URL" "$RATE" 32 "$DURATION" >"$WORK/load.out" &
LPID=$!
PIDS+=("$LPID")
: >"$WORK/rss"
for ((t = 0; t <= DURATION; t += 10)); do
  kill -0 "$LPID" 2>/dev/null || break
  echo "$t $(rss_kib "$APID")" >>"$WORK/rss"
  sleep 10
done
load_ok=0
wait "$LPID" || load_ok=$?
echo "$DURATION $(rss_kib "$APID")" >>"$WORK/rss"
errors_polls=$(curl -fs "http://127.0.0.1:$APORT/metrics" | awk '/^qma_poll_errors_total\{source="jobs"/ {s += $2} END {print s + 0}')
read -r polls _ < <(poll_stats)
stop_adapter

status=0
(python3 - "$WORK/load.out" "$WORK/rss" "$errors_polls" "$polls" "$LISTS" "$RATE" "$DURATION" <<'PY'
import sys
load, rss_file, poll_errors, polls, lists, rate, duration = sys.argv[1:]
fields = dict(kv.split("=") for kv in open(load).read().split()[1:])
rss = [tuple(map(int, l.split())) for l in open(rss_file) if l.strip()]
warm = next((kib for t, kib in rss if t >= 60), rss[0][1])
end = rss[-1][1]
drift = (end - warm) / warm * 100
print(f"## Soak ({int(duration)} s, {int(rate):,} GET/s, {int(lists):,} lists polled every 2 s)")
print()
print(f"| requests | errors | achieved rate | p50 | p99 | p99.9 | max | latest send | polls | poll errors | RSS at 1 min | RSS at end | drift |")
print(f"| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
print(f"| {int(fields['requests']):,} | {fields['errors']} | {int(fields['rate']):,}/s | {fields['p50_us']} µs | {fields['p99_us']} µs "
      f"| {fields['p999_us']} µs | {int(fields['max_us']) / 1000:.1f} ms | {int(fields['max_lag_us']) / 1000:.1f} ms late | {polls} | {poll_errors} | {warm / 1024:.1f} MiB "
      f"| {end / 1024:.1f} MiB | {drift:+.2f} % |")
print()
print("RSS samples (s: MiB): " + ", ".join(f"{t}: {kib / 1024:.1f}" for t, kib in rss))
ok = fields["errors"] == "0" and poll_errors == "0" and abs(drift) < 5
print()
print("PASS" if ok else "FAIL: " + ", ".join(
    w for w, bad in [("request errors", fields["errors"] != "0"), ("poll errors", poll_errors != "0"),
                     (f"RSS drift {drift:+.2f} %", abs(drift) >= 5)] if bad))
sys.exit(0 if ok else 1)
PY
) || status=$?

[ "$load_ok" = 0 ] || say "the load generator reported failed requests"
exit "$status"
