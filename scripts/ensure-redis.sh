#!/usr/bin/env bash
# Makes sure a Redis server answers on 127.0.0.1:6379, saying what it did:
#   - already running: nothing to do;
#   - installed but stopped: starts it (daemonized, no persistence);
#   - not installed: installs Debian's redis-server with apt-get (needs root), then starts it;
#   - with QMA_NEED_REDIS_TOOLS=1 (`make test`): also installs redis-server and redis-cli when a
#     Redis already answers but the binaries are missing, for the tests' private servers.
# Used by `make run` and `make test`; safe to run again.
set -euo pipefail

HOST=127.0.0.1
PORT=${REDIS_PORT:-6379}

say() { echo "[ensure-redis] $*"; }

ping() {
  if command -v redis-cli >/dev/null 2>&1; then
    timeout 2 redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null | grep -q PONG
  else
    (exec 3<>"/dev/tcp/$HOST/$PORT" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null
  fi
}

. "$(dirname "$0")/lib/apt.sh"

if ping; then
  say "Redis is already running on $HOST:$PORT"
  if [ "${QMA_NEED_REDIS_TOOLS:-}" = 1 ]; then
    # `make test` also starts private servers (the read-only audit, Sentinel, Cluster), so it
    # needs the binaries even when the Redis on 6379 runs elsewhere (a container, another host).
    apt_install_missing redis-server redis-server
    apt_install_missing redis-cli redis-tools
  fi
  exit 0
fi

if ! command -v redis-server >/dev/null 2>&1; then
  apt_install_missing redis-server redis-server
  say "installed $(redis-server --version | awk '{print $3}')"
fi

DIR=/tmp/qma-redis-$PORT
say "starting redis-server on $HOST:$PORT (no persistence, log in $DIR/redis.log)"
mkdir -p "$DIR"
if ! redis-server --daemonize yes --bind "$HOST" --port "$PORT" --save "" --appendonly no \
  --dir "$DIR" --logfile "$DIR/redis.log"; then
  say "redis-server would not start; see $DIR/redis.log" >&2
  exit 1
fi
# Daemonized, it answers within milliseconds; a port held by another program never does.
deadline=$((SECONDS + ${QMA_REDIS_START_TIMEOUT:-10}))
while [ $SECONDS -lt $deadline ]; do
  if ping; then
    say "Redis is up on $HOST:$PORT"
    exit 0
  fi
  sleep 0.1
done
say "Redis did not answer on $HOST:$PORT within ${QMA_REDIS_START_TIMEOUT:-10}s; see $DIR/redis.log" >&2
exit 1
