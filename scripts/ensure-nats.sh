#!/usr/bin/env bash
# Makes sure a NATS server with JetStream answers on 127.0.0.1:4222 (NATS_PORT overrides the
# port), saying what it did:
#   - already running with JetStream: nothing to do;
#   - a server answers there WITHOUT JetStream: says so and fails (the NATS tests and examples
#     need JetStream; this script does not restart a server it did not start);
#   - something else holds the port (it accepts but sends no NATS INFO line): says so and fails;
#   - installed but stopped: starts nats-server in the background (-js, its store, log and pid
#     file in /tmp/qma-nats-<port>), detached so it outlives this script;
#   - not installed: installs Debian's nats-server with apt-get (needs root), then starts it;
#   - with QMA_NEED_NATS_SERVER=1 (`make test`): also installs nats-server when a server already
#     answers but the binary is missing, for the tests' private servers.
# Waits at most QMA_NATS_START_TIMEOUT seconds (default 10) for a server it starts. Used by
# `make run` and `make test`; safe to run again.
set -euo pipefail

HOST=127.0.0.1
PORT=${NATS_PORT:-4222}
START_TIMEOUT=${QMA_NATS_START_TIMEOUT:-10}
DIR=/tmp/qma-nats-$PORT

say() { echo "[ensure-nats] $*"; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# The INFO line a NATS server sends first on every connection (TLS or not, auth or not), or
# nothing (status 1) when none arrives within 2 seconds.
info_line() {
  local line
  line=$(exec 2>/dev/null 3<>"/dev/tcp/$HOST/$PORT" && timeout 2 head -n 1 <&3) || return 1
  case $line in
    INFO\ *) printf '%s\n' "$line" ;;
    *) return 1 ;;
  esac
}

# 0: NATS with JetStream; 1: no NATS answer; 2: NATS without JetStream.
probe() {
  local info
  info=$(info_line) || return 1
  # The server's INFO has "jetstream":true only when JetStream is on (the field is omitted
  # otherwise).
  case $info in
    *'"jetstream":true'*) return 0 ;;
    *) return 2 ;;
  esac
}

# Says what to do about a server without JetStream on the port, and fails.
no_jetstream() {
  say "a NATS server answers on $HOST:$PORT but JetStream is off (its INFO has no \"jetstream\":true); the NATS source needs JetStream" >&2
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nats-server 2>/dev/null; then
    say "it is Debian's nats-server.service: add 'jetstream { store_dir: \"/var/lib/nats-server\" }' to /etc/nats-server.conf and 'systemctl restart nats-server', or 'systemctl disable --now nats-server' and run this again" >&2
  else
    say "restart it with -js (or a jetstream {} block in its config), or stop it and run this again to start one" >&2
  fi
  exit 1
}

. "$(dirname "$0")/lib/apt.sh"

status=0
probe || status=$?
case $status in
  0)
    say "NATS with JetStream is already running on $HOST:$PORT"
    if [ "${QMA_NEED_NATS_SERVER:-}" = 1 ]; then
      # `make test` also starts private servers (TLS, NKeys, accounts, permissions, restarts),
      # so it needs the binary even when the server on this port runs elsewhere (a container).
      apt_install_missing nats-server nats-server
    fi
    exit 0
    ;;
  2) no_jetstream ;;
esac
if port_open; then
  say "something accepts connections on $HOST:$PORT but sends no NATS INFO line: another program holds the port; not starting nats-server there" >&2
  exit 1
fi

if ! command -v nats-server >/dev/null 2>&1; then
  apt_install_missing nats-server nats-server
  say "installed nats-server $(nats-server --version | awk '{print $2}')"
  # On a machine with systemd, the package starts its own service (/etc/nats-server.conf:
  # 127.0.0.1:4222, no JetStream). We installed it just now, so take the port back for a
  # server with JetStream.
  status=0
  probe || status=$?
  if [ $status = 0 ]; then
    say "the package's nats-server.service answers on $HOST:$PORT with JetStream"
    exit 0
  elif [ $status = 2 ] && command -v systemctl >/dev/null 2>&1 \
    && systemctl is-active --quiet nats-server 2>/dev/null; then
    say "the package started nats-server.service without JetStream on $HOST:$PORT: stopping and disabling it ('systemctl enable --now nats-server' undoes this)"
    systemctl disable --now nats-server >/dev/null 2>&1 || true
  fi
fi

say "starting nats-server with JetStream on $HOST:$PORT (store in $DIR/store, log in $DIR/nats.log)"
mkdir -p "$DIR/store"
# setsid + nohup: its own session, so it outlives this script and the terminal; its output goes
# to the log too (a start-up error comes before -l takes effect), never to our stdout, which a
# caller may be reading until it closes.
setsid nohup nats-server -a "$HOST" -p "$PORT" -js -sd "$DIR/store" -l "$DIR/nats.log" \
  -P "$DIR/nats.pid" </dev/null >>"$DIR/nats.log" 2>&1 &
# setsid execs (it forks only when it leads a process group, which a background job here never
# does), so this is nats-server's pid, the one it writes to nats.pid.
pid=$!

deadline=$((SECONDS + START_TIMEOUT))
while [ $SECONDS -lt $deadline ]; do
  status=0
  probe || status=$?
  case $status in
    0)
      say "NATS with JetStream is up on $HOST:$PORT (pid $pid)"
      exit 0
      ;;
    2) no_jetstream ;;
  esac
  if ! kill -0 "$pid" 2>/dev/null; then
    say "nats-server exited without answering on $HOST:$PORT; see $DIR/nats.log:" >&2
    tail -n 5 "$DIR/nats.log" 2>/dev/null | sed 's/^/    /' >&2 || true
    exit 1
  fi
  sleep 0.1
done
say "nats-server did not answer on $HOST:$PORT within ${START_TIMEOUT}s; see $DIR/nats.log" >&2
exit 1
