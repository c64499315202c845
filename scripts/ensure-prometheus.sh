#!/usr/bin/env bash
# Makes sure a `prometheus` binary is installed, saying what it did (Debian's package, with
# apt-get, as root). Nothing is started: the tests that need Prometheus (the dcgm and inference
# sources' Prometheus modes) run their own on a free port with their own config. Used by
# `make test`.
set -euo pipefail

say() { echo "[ensure-prometheus] $*"; }

if command -v prometheus >/dev/null 2>&1; then
  say "prometheus is installed ($(prometheus --version 2>&1 | head -1 | awk '{print $3}'))"
  exit 0
fi
. "$(dirname "$0")/lib/apt.sh"
apt_install_missing prometheus prometheus --no-install-recommends
say "installed (its service is not started) $(prometheus --version 2>&1 | head -1 | awk '{print $3}')"
