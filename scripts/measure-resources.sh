#!/usr/bin/env bash
# CPU and memory of the release binary under a steady load, for the Deployment's requests and
# limits: 1,000 Redis lists read by a pattern metric every 2 s (the default interval), and 20
# metric GETs per second (far more than HPAs send: one per HPA metric per 15 s). Prints the CPU
# used (millicores, from /proc/<pid>/stat) and the resident set (VmRSS, peak VmHWM).
# Usage: scripts/measure-resources.sh [seconds]   (needs the local Redis: make services)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_MEASURE=${1:-30}
say() { echo "[measure-resources] $*"; }

cargo build --release --quiet --bin queue-metrics-adapter
BIN=target/release/queue-metrics-adapter
. scripts/lib/adapter-harness.sh measure

for i in $(seq 1 1000); do echo "RPUSH ${PREFIX}q:$i a b c"; done | redis-cli >/dev/null
cat >"$WORK/config.yaml" <<YAML
sources:
  jobs:
    redis: {url: "redis://127.0.0.1:6379/0"}
metrics:
  - {name: queues, source: jobs, measure: length, redis: {type: list, pattern: "${PREFIX}q:*"}}
YAML
"$BIN" serve --config "$WORK/config.yaml" --listen "127.0.0.1:$PORT" --grpc-listen off \
  --insecure-http --disable-auth --shutdown-delay 0s 2>"$WORK/log" &
PID=$!
wait_ready "http://127.0.0.1:$PORT/readyz"
sleep 5   # past start-up and the first discovery

ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
HZ=$(getconf CLK_TCK)
before=$(ticks)
python3 - "$PORT" "$SECONDS_TO_MEASURE" <<'PY'
import sys, time, urllib.request
port, seconds = sys.argv[1], float(sys.argv[2])
url = f"http://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/queues?labelSelector=queue%3D500"
end = time.time() + seconds
while time.time() < end:
    urllib.request.urlopen(url).read()
    time.sleep(0.05)
PY
after=$(ticks)
cpu=$(python3 -c "print(round(($after - $before) / $HZ / $SECONDS_TO_MEASURE * 1000, 1))")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
say "1,000 lists every 2 s + 20 GET/s over ${SECONDS_TO_MEASURE} s: CPU ${cpu} millicores, RSS $((rss / 1024)) MiB (peak $((hwm / 1024)) MiB)"
