# Sourced by the scripts that measure the release binary over many Redis lists
# (bench-vs-baselines.sh, soak.sh): a key prefix, a work directory, loading and removing N
# Sidekiq-style lists, starting and stopping the adapter, and reading its CPU, memory and poll
# figures. One clean-up on exit stops every process started and removes the keys and files.
# Usage: . scripts/lib/redis-lists-bench.sh <name>   (needs BIN and `say`)

PREFIX="qma-$1:$$:"
WORK=$(mktemp -d)
PIDS=()
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  redis-cli --scan --pattern "${PREFIX}*" | xargs -r -n 1000 redis-cli unlink >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# CPU nanoseconds of every thread of a process (scheduler accounting, not clock ticks).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d\n", s}'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# load N: N lists of three Sidekiq jobs each, enqueued 60, 59 and 58 s ago.
load() {
  python3 - "$PREFIX" "$1" <<'PY' | redis-cli --pipe >/dev/null
import sys, time
prefix, n = sys.argv[1], int(sys.argv[2])
now = int(time.time())
out = sys.stdout
def cmd(*parts):
    out.write(f"*{len(parts)}\r\n")
    for p in parts:
        out.write(f"${len(p.encode())}\r\n{p}\r\n")
for i in range(n):
    key = f"{prefix}queue:{i:05}"
    cmd("DEL", key)
    for j in range(3):
        cmd("LPUSH", key, '{"class":"EmbedJob","args":[%d],"enqueued_at":%d}' % (j, (now - 60 + j) * 1000))
PY
}
unload() { redis-cli --scan --pattern "${PREFIX}queue:*" | xargs -r -n 1000 redis-cli unlink >/dev/null; }

# start_adapter CONFIG: the release binary on a free port, ready; sets APORT and APID.
start_adapter() {
  APORT=$(free_port)
  "$BIN" serve --config "$1" --listen "127.0.0.1:$APORT" --grpc-listen off \
    --insecure-http --disable-auth --shutdown-delay 0s 2>>"$WORK/adapter.log" &
  APID=$!
  PIDS+=("$APID")
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$APORT/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$APID" 2>/dev/null || break
    sleep 0.1
  done
  say "the adapter did not become ready; its log:"; tail -20 "$WORK/adapter.log" >&2
  exit 1
}
stop_adapter() { kill "$APID" 2>/dev/null || true; wait "$APID" 2>/dev/null || true; }

config() { # config FILE POLL_INTERVAL DISCOVERY_INTERVAL
  cat >"$1" <<YAML
poll_interval: $2
poll_timeout: 30s
max_staleness: 10m
discovery_interval: $3
sources:
  jobs:
    redis: {url: "redis://127.0.0.1:6379/0"}
metrics:
  - {name: len, source: jobs, measure: length, redis: {type: list, pattern: "${PREFIX}queue:*"}}
  - {name: age, source: jobs, measure: oldest_age_seconds, redis: {type: list, pattern: "${PREFIX}queue:*", timestamp: {json_pointer: /enqueued_at, unit: ms}}}
YAML
}

# poll_stats: "count sum" of the jobs source's qma_poll_duration_seconds.
poll_stats() {
  curl -fs "http://127.0.0.1:$APORT/metrics" | awk '
    /^qma_poll_duration_seconds_count\{source="jobs"\}/ {c = $2}
    /^qma_poll_duration_seconds_sum\{source="jobs"\}/ {s = $2}
    END {print c + 0, s + 0}'
}
