#!/usr/bin/env bash
# Makes sure RabbitMQ answers on 127.0.0.1:5672 with its management API on 127.0.0.1:15672,
# saying what it did:
#   - not installed: installs Debian's rabbitmq-server with apt-get (needs root);
#   - installed but stopped (a fresh machine after boot): enables the management plugin, starts
#     the node (rabbitmq-server -detached) and waits for it to boot, at most
#     QMA_RABBITMQ_BOOT_TIMEOUT seconds (default 120), then says where its log is;
#   - running with the management plugin off: enables it and waits for port 15672.
# Tests log in as guest/guest, which RabbitMQ allows from loopback only. Safe to run again.
#
# The node is RabbitMQ's own environment's: RABBITMQ_NODENAME, RABBITMQ_NODE_PORT and the
# other RABBITMQ_* variables are passed on, and QMA_RABBITMQ_MANAGEMENT_PORT names the
# management port to wait for, so tests/ensure_scripts.rs runs this same path on a private,
# stopped node.
set -euo pipefail

AMQP_PORT=${RABBITMQ_NODE_PORT:-5672}
MANAGEMENT_PORT=${QMA_RABBITMQ_MANAGEMENT_PORT:-15672}
BOOT_TIMEOUT=${QMA_RABBITMQ_BOOT_TIMEOUT:-120}
LOG_DIR=${RABBITMQ_LOG_BASE:-/var/log/rabbitmq}

say() { echo "[ensure-rabbitmq] $*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Waits up to $2 seconds for port $1.
wait_port() {
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    port_open "$1" && return 0
    sleep 0.5
  done
  return 1
}

. "$(dirname "$0")/lib/apt.sh"
apt_install_missing rabbitmq-server rabbitmq-server

if port_open "$AMQP_PORT"; then
  say "RabbitMQ is already running on 127.0.0.1:$AMQP_PORT"
else
  # Enabled before the boot, so the one boot brings the management API up as well.
  rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
  say "starting rabbitmq-server (waiting up to ${BOOT_TIMEOUT}s for it to boot)"
  if ! rabbitmq-server -detached; then
    say "rabbitmq-server would not start; its log is in $LOG_DIR" >&2
    exit 1
  fi
  # `rabbitmqctl await_startup` fails at once ("node not running at all") until the new node
  # has registered with epmd, so wait for its AMQP port first; then the node is up.
  if ! wait_port "$AMQP_PORT" "$BOOT_TIMEOUT"; then
    say "RabbitMQ did not open 127.0.0.1:$AMQP_PORT within ${BOOT_TIMEOUT}s; its log is in $LOG_DIR (rabbitmqctl status says more)" >&2
    exit 1
  fi
  timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
  say "RabbitMQ is up on 127.0.0.1:$AMQP_PORT"
fi

if port_open "$MANAGEMENT_PORT"; then
  say "the management API is on 127.0.0.1:$MANAGEMENT_PORT"
else
  if ! rabbitmq-plugins list --enabled --minimal 2>/dev/null | grep -qx rabbitmq_management; then
    say "enabling the rabbitmq_management plugin"
    rabbitmq-plugins enable rabbitmq_management >/dev/null
  fi
  if ! wait_port "$MANAGEMENT_PORT" 60; then
    say "the management API did not open 127.0.0.1:$MANAGEMENT_PORT within 60s; its log is in $LOG_DIR" >&2
    exit 1
  fi
  say "the management API is up on 127.0.0.1:$MANAGEMENT_PORT"
fi
