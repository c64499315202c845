#!/usr/bin/env bash
# The adapter measured side by side with raw baselines, in one run, on this machine (issue 18;
# figures in BENCHMARKS.md). Not part of `make test`: it takes a few minutes and its figures
# are timings.
#
#  1. Poll of N Sidekiq-style lists (3 JSON jobs each; `length` + `oldest_age_seconds` from
#     `enqueued_at`, a pattern metric each: 2N series). Baseline: the same 1 + 2N commands
#     (`TIME`, `LLEN`, `LINDEX -1`) as one pipelined round trip by a raw RESP client that only
#     counts replies (examples/raw_resp_pipeline.rs), one round trip a second like the polls
#     (back to back it is faster still, and printed too). Adapter: the release binary polling
#     every second; its own qma_poll_duration_seconds mean, its CPU per poll (all threads, from
#     /proc/<pid>/task/*/schedstat) and its resident set.
#  2. Metric GET over HTTP/1.1 keep-alive, `wrk -t1 -c32`: the adapter answering one series of
#     those N lists, against nginx (Debian's package, on a free loopback port) answering the same
#     response bytes from memory (`return 200`), with one worker process and with two; the
#     adapter once with one runtime thread and once with two (TOKIO_WORKER_THREADS), so each
#     nginx row has an adapter row with as many threads as nginx has workers. Throughput,
#     latency, and server CPU per request (all threads or worker processes, from schedstat).
#
# Usage: scripts/bench-vs-baselines.sh [--lists N] [--curve] [--discovery] [--get-only] [--seconds S]
#   --curve       the poll at 1,000 / 10,000 / 100,000 lists instead of only N
#   --discovery   also: the poll of N lists while SCAN discovery walks 1,000,000 other keys
#   --get-only    only the metric GET (no poll, no discovery)
# Installs wrk and nginx with apt-get when missing (and says so). Needs the local Redis
# (make services). Cleans up its keys, processes and files on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[bench-vs-baselines] $*" >&2; }

LISTS=10000
CURVE=0
DISCOVERY=0
GET_ONLY=0
SECONDS_PER=10
while [ $# -gt 0 ]; do
  case $1 in
    --lists) LISTS=$2; shift 2 ;;
    --curve) CURVE=1; shift ;;
    --discovery) DISCOVERY=1; shift ;;
    --get-only) GET_ONLY=1; shift ;;
    --seconds) SECONDS_PER=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# Debian's packages when missing (apt-get update first, so a fresh machine's empty lists do not
# fail the install), saying so.
. scripts/lib/apt.sh
PATH="$PATH:/usr/sbin"
apt_install_missing wrk wrk
apt_install_missing nginx nginx-light
NGINX=$(command -v nginx) # /usr/sbin is on PATH above
scripts/ensure-redis.sh >&2

say "building the release binary and the raw RESP client"
cargo build --release --quiet --bin queue-metrics-adapter --example raw_resp_pipeline
BIN=target/release/queue-metrics-adapter
RAW=target/release/examples/raw_resp_pipeline

. scripts/lib/redis-lists-bench.sh baselines

# measure_poll N: prints one table row (markdown) for N lists.
measure_poll() {
  local n=$1 raw a_count a_sum b_count b_sum cpu0 cpu1 polls
  say "poll of $n lists: loading"
  load "$n"
  # The floor at the adapter's cadence (a round trip a second, as it polls), and back to back.
  raw=$("$RAW" 127.0.0.1:6379 "$PREFIX" "$n" "$SECONDS_PER" 1000)
  say "$raw"
  say "back to back: $("$RAW" 127.0.0.1:6379 "$PREFIX" "$n" 30)"
  config "$WORK/poll.yaml" 1s 1h
  start_adapter "$WORK/poll.yaml"
  sleep 3 # past start-up, discovery and the first polls
  read -r a_count a_sum < <(poll_stats)
  cpu0=$(cpu_ns "$APID")
  sleep "$SECONDS_PER"
  read -r b_count b_sum < <(poll_stats)
  cpu1=$(cpu_ns "$APID")
  polls=$((b_count - a_count))
  local rss
  rss=$(rss_kib "$APID")
  stop_adapter
  unload
  python3 - "$n" "$raw" "$polls" "$a_sum" "$b_sum" "$cpu0" "$cpu1" "$rss" <<'PY'
import sys
n, raw, polls, a_sum, b_sum, cpu0, cpu1, rss = sys.argv[1:]
raw = dict(kv.split("=") for kv in raw.split()[1:])
polls = int(polls)
mean = (float(b_sum) - float(a_sum)) / polls * 1000
cpu = (int(cpu1) - int(cpu0)) / polls / 1e6
base = float(raw["mean_ms"])
series = 2 * int(n)
print(f"| {int(n):,} lists ({series:,} series) | {base:.2f} ms | {mean:.2f} ms | **{mean / base:.2f}×** "
      f"| {cpu:.2f} ms ({cpu / mean:.2f}× wall) | {int(rss) / 1024:.1f} MiB ({int(rss) * 1024 / series:,.0f} B/series) | {polls} |")
PY
}

POLL_HEADER="| case | raw pipelined round trip (mean) | adapter poll (mean) | ratio | adapter CPU per poll | adapter RSS | polls |
| --- | --- | --- | --- | --- | --- | --- |"

if [ "$GET_ONLY" = 0 ]; then
echo
echo "## Poll ($(date -u +%F), $(nproc) cores, Redis $(redis-cli info server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r'))"
echo
echo "$POLL_HEADER"
if [ "$CURVE" = 1 ]; then
  for n in 1000 10000 100000; do measure_poll "$n"; done
else
  measure_poll "$LISTS"
fi

# ---- discovery over a large keyspace ----
if [ "$DISCOVERY" = 1 ]; then
  say "discovery: loading 1,000,000 string keys beside $LISTS lists"
  python3 - "$PREFIX" <<'PY' | redis-cli --pipe >/dev/null
import sys
prefix = sys.argv[1]
out = sys.stdout
for i in range(1_000_000):
    k = f"{prefix}other:{i}"
    out.write(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n$1\r\n1\r\n")
PY
  load "$LISTS"
  # The scan itself, as the adapter sends it (COUNT 1000, TYPE list), from a minimal client.
  read -r scan_ms scanned < <(python3 - "${PREFIX}queue:*" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", 6379))
f = s.makefile("rb")
def cmd(*parts):
    s.sendall(b"".join([b"*%d\r\n" % len(parts)] + [b"$%d\r\n%s\r\n" % (len(p), p) for p in parts]))
def reply():
    line = f.readline()
    if line[:1] == b"*":
        return [reply() for _ in range(int(line[1:]))]
    if line[:1] == b"$":
        n = int(line[1:])
        return None if n < 0 else f.read(n + 2)[:-2]
    return line[1:-2]
start, cursor, found = time.time(), b"0", 0
while True:
    cmd(b"SCAN", cursor, b"MATCH", sys.argv[1].encode(), b"COUNT", b"1000", b"TYPE", b"list")
    cursor, keys = reply()
    found += len(keys)
    if cursor == b"0":
        break
print(int((time.time() - start) * 1000), found)
PY
)
  # slow_polls: polls over 100 ms, from the histogram.
  slow_polls() {
    curl -fs "http://127.0.0.1:$APORT/metrics" | awk '
      /^qma_poll_duration_seconds_bucket\{source="jobs",le="0.1"\}/ {b = $2}
      /^qma_poll_duration_seconds_count\{source="jobs"\}/ {c = $2}
      END {print c - b}'
  }
  config "$WORK/discovery.yaml" 1s 2s
  start_adapter "$WORK/discovery.yaml"
  sleep 3
  read -r a_count a_sum < <(poll_stats)
  a_slow=$(slow_polls)
  sleep "$SECONDS_PER"
  read -r b_count b_sum < <(poll_stats)
  b_slow=$(slow_polls)
  series=$(curl -fs "http://127.0.0.1:$APORT/apis/external.metrics.k8s.io/v1beta1/namespaces/default/len" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
  stop_adapter
  python3 - "$a_count" "$a_sum" "$b_count" "$b_sum" "$a_slow" "$b_slow" "$scan_ms" "$scanned" "$series" "$SECONDS_PER" <<'PY'
import sys
a_count, a_sum, b_count, b_sum, a_slow, b_slow = map(float, sys.argv[1:7])
scan_ms, scanned, series, seconds = sys.argv[7:]
polls = b_count - a_count
print()
print(f"## Discovery over a keyspace of 1,000,000 other keys (`discovery_interval: 2s`, polls every 1 s, {seconds} s)")
print()
print(f"One full `SCAN ... COUNT 1000 TYPE list` of that keyspace from a minimal client: {int(scan_ms):,} ms ({scanned} keys matched). "
      f"Adapter: {polls:.0f} polls, mean {(b_sum - a_sum) / polls * 1000:.2f} ms, "
      f"{b_slow - a_slow:.0f} over 100 ms; {series} series served.")
PY
  redis-cli --scan --pattern "${PREFIX}other:*" | xargs -r -n 5000 redis-cli unlink >/dev/null
  unload
fi
fi # GET_ONLY

# ---- metric GET: adapter vs nginx serving the same bytes ----
say "metric GET: loading $LISTS lists"
load "$LISTS"
config "$WORK/get.yaml" 60s 1h # no poll inside the measured window
start_adapter "$WORK/get.yaml"
PATH_Q="/apis/external.metrics.k8s.io/v1beta1/namespaces/default/len?labelSelector=queue%3D00500"
curl -fs "http://127.0.0.1:$APORT$PATH_Q" >"$WORK/body.json"
stop_adapter
BYTES=$(wc -c <"$WORK/body.json")
if grep -q "[\$'\\\\]" "$WORK/body.json"; then say "the body has characters nginx's return would reinterpret"; exit 1; fi
# nginx_start WORKERS: nginx on a free port answering the same bytes from memory; sets NPORT.
nginx_start() {
  NPORT=$(free_port)
  cat >"$WORK/nginx.conf" <<NGINX
worker_processes $1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK; uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  server {
    listen 127.0.0.1:$NPORT;
    location / { default_type application/json; return 200 '$(cat "$WORK/body.json")'; }
  }
}
NGINX
  "$NGINX" -c "$WORK/nginx.conf"
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$NPORT$PATH_Q" >/dev/null && break; sleep 0.1; done
  cmp -s <(curl -fs "http://127.0.0.1:$NPORT$PATH_Q") "$WORK/body.json" || { say "nginx does not answer the same bytes"; exit 1; }
}
nginx_stop() {
  kill "$(cat "$WORK/nginx.pid")"
  for _ in $(seq 1 50); do [ -f "$WORK/nginx.pid" ] || break; sleep 0.1; done
}

# wrk_run URL PIDS...: "requests req/s p50 p99 cpu_us_per_request non2xx"
wrk_run() {
  local url=$1; shift
  local c0=0 c1=0 p out
  wrk -t1 -c32 -d2s "$url" >/dev/null # warm-up
  for p in "$@"; do c0=$((c0 + $(cpu_ns "$p"))); done
  out=$(wrk -t1 -c32 -d"${SECONDS_PER}s" --latency "$url")
  for p in "$@"; do c1=$((c1 + $(cpu_ns "$p"))); done
  echo "$out" >>"$WORK/wrk.log"
  echo "$out" | python3 -c '
import re, sys
text = sys.stdin.read()
cpu = int(sys.argv[1])
reqs = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def lat(p):
    v, unit = re.search(p + r"%\s+([\d.]+)(us|ms|s)", text).groups()
    return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[unit]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(reqs, rps, lat("50"), lat("99"), cpu / reqs / 1000, errors.group(1) if errors else 0)
' "$((c1 - c0))"
}
ROWS=()
for workers in 1 2; do
  nginx_start "$workers"
  say "wrk -t1 -c32 -d${SECONDS_PER}s: nginx, $workers worker(s)"
  read -r req rps p50 p99 cpu err < <(wrk_run "http://127.0.0.1:$NPORT$PATH_Q" $(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")"))
  ROWS+=("nginx, worker_processes $workers|$rps|$p50|$p99|$cpu|$err")
  nginx_stop
done
for threads in 1 2; do
  TOKIO_WORKER_THREADS=$threads start_adapter "$WORK/get.yaml"
  # The same bytes but for the observation time (a new process polled again).
  [ "$(curl -fs "http://127.0.0.1:$APORT$PATH_Q" | wc -c)" = "$BYTES" ] || { say "the adapter's answer changed size"; exit 1; }
  say "wrk -t1 -c32 -d${SECONDS_PER}s: adapter, $threads runtime thread(s)"
  read -r req rps p50 p99 cpu err < <(wrk_run "http://127.0.0.1:$APORT$PATH_Q" "$APID")
  ROWS+=("adapter, $threads runtime thread(s)|$rps|$p50|$p99|$cpu|$err")
  stop_adapter
done
python3 - "$BYTES" "$LISTS" "${ROWS[@]}" <<'PY'
import sys
b, lists, *rows = sys.argv[1:]
rows = [r.split("|") for r in rows]
print()
print(f"## Metric GET: one series of {2 * int(lists):,}, {b}-byte JSON body, `wrk -t1 -c32`, HTTP/1.1 keep-alive")
print()
print("| server | req/s | p50 | p99 | server CPU per request | non-2xx |")
print("| --- | --- | --- | --- | --- | --- |")
for name, rps, p50, p99, cpu, err in rows:
    print(f"| {name} | {float(rps):,.0f} | {float(p50):.0f} µs | {float(p99):.0f} µs | {float(cpu):.2f} µs | {err} |")
# Each adapter row against the nginx row with as many workers as it has threads.
for k in (0, 1):
    n, a = rows[k], rows[2 + k]
    print(f"| {a[0]} / {n[0]} | **{float(a[1]) / float(n[1]):.2f}×** throughput | | | **{float(a[4]) / float(n[4]):.2f}×** CPU per request | |")
PY
