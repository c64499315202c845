#!/usr/bin/env bash
# Makes sure a Redis server answers on 127.0.0.1:6379, saying what it did:
#   - already running: nothing to do;
#   - installed but stopped: starts it (daemonized, no persistence);
#   - not installed: installs Debian's redis-server with apt-get (needs root), then starts it.
# Used by `make run` and `make test`; safe to run again.
set -euo pipefail

HOST=127.0.0.1
PORT=${REDIS_PORT:-6379}

say() { echo "[ensure-redis] $*"; }

ping() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null | grep -q PONG
  else
    (exec 3<>"/dev/tcp/$HOST/$PORT" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null
  fi
}

if ping; then
  say "Redis is already running on $HOST:$PORT"
  exit 0
fi

. "$(dirname "$0")/lib/apt.sh"
if ! command -v redis-server >/dev/null 2>&1; then
  apt_install_missing redis-server redis-server
  say "installed $(redis-server --version | awk '{print $3}')"
fi

say "starting redis-server on $HOST:$PORT (no persistence)"
mkdir -p /tmp/qma-redis
redis-server --daemonize yes --bind "$HOST" --port "$PORT" --save "" --appendonly no \
  --dir /tmp/qma-redis --logfile /tmp/qma-redis/redis.log
for _ in $(seq 1 50); do
  if ping; then
    say "Redis is up on $HOST:$PORT"
    exit 0
  fi
  sleep 0.1
done
say "Redis did not answer on $HOST:$PORT; see /tmp/qma-redis/redis.log" >&2
exit 1
