#!/usr/bin/env bash
# Makes sure RabbitMQ answers on 127.0.0.1:5672 with its management API on 127.0.0.1:15672,
# saying what it did:
#   - not installed: installs Debian's rabbitmq-server with apt-get (needs root);
#   - not running: starts it (rabbitmq-server -detached) and waits for it to boot;
#   - management plugin off: enables rabbitmq_management (and waits for port 15672).
# Tests log in as guest/guest, which RabbitMQ allows from loopback only. Safe to run again.
set -euo pipefail

say() { echo "[ensure-rabbitmq] $*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 "${2:-120}"); do
    port_open "$1" && return 0
    sleep 0.5
  done
  return 1
}

. "$(dirname "$0")/lib/apt.sh"
apt_install_missing rabbitmq-server rabbitmq-server

if port_open 5672; then
  say "RabbitMQ is already running on 127.0.0.1:5672"
else
  say "starting rabbitmq-server"
  rabbitmq-server -detached
  timeout 120 rabbitmqctl await_startup >/dev/null
  wait_port 5672 || { say "RabbitMQ did not open port 5672" >&2; exit 1; }
  say "RabbitMQ is up on 127.0.0.1:5672"
fi

if port_open 15672; then
  say "the management API is already on 127.0.0.1:15672"
else
  say "enabling the rabbitmq_management plugin"
  rabbitmq-plugins enable rabbitmq_management >/dev/null
  wait_port 15672 || { say "the management API did not open port 15672" >&2; exit 1; }
  say "the management API is up on 127.0.0.1:15672"
fi
