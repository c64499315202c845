#!/usr/bin/env bash
# Makes sure a `prometheus` binary is installed, saying what it did (Debian's package, with
# apt-get, as root). Nothing is started: the tests that need Prometheus (the dcgm source's
# Prometheus mode) run their own on a free port with their own config. Used by `make test`.
set -euo pipefail

say() { echo "[ensure-prometheus] $*"; }

if command -v prometheus >/dev/null 2>&1; then
  say "prometheus is installed ($(prometheus --version 2>&1 | head -1 | awk '{print $3}'))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  say "prometheus is not installed and we are not root: install it (apt-get install prometheus) and retry" >&2
  exit 1
fi
say "prometheus is not installed: installing Debian's prometheus with apt-get (its service is not started)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
say "installed $(prometheus --version 2>&1 | head -1 | awk '{print $3}')"
