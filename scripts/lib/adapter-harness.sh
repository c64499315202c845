# Sourced by the scripts that run the adapter binary against the local Redis (kubectl-raw-check,
# curl-tls-check, measure-resources): a free port, a work directory, a key prefix, and one
# clean-up on exit that stops the adapter ($PID) and removes the keys and the directory.
# Usage: . scripts/lib/adapter-harness.sh <name>; then set PID after starting the adapter.

HARNESS_NAME=$1
PREFIX="qma-${HARNESS_NAME}:$$:"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
WORK=$(mktemp -d)
harness_cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  redis-cli --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli del >/dev/null
  rm -rf "$WORK"
}
trap harness_cleanup EXIT

# wait_ready URL [curl options...]: until the adapter's readiness answers 200 (10 s at most).
wait_ready() {
  local url=$1
  shift
  for _ in $(seq 1 100); do
    curl -fs "$@" "$url" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "[$HARNESS_NAME] the adapter did not become ready at $url" >&2
  return 1
}
