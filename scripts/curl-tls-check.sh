#!/usr/bin/env bash
# The API port as an operator checks it with curl: HTTPS with a serving certificate from files, a
# front-proxy client certificate (as the kube-apiserver aggregator presents) reads a metric, and
# without one the request is refused. Certificates are made here with openssl; no cluster is
# involved (the front proxy's user is in system:masters, which needs no SubjectAccessReview; the
# kubeconfig points nowhere and is never dialled).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[curl-tls-check] $*"; }

cargo build --quiet
BIN=target/debug/queue-metrics-adapter
. scripts/lib/adapter-harness.sh curl-check
cd "$WORK"

# A serving CA and certificate for localhost, a front-proxy CA and its client certificate.
ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=$1" -keyout "$1.key" -out "$1.crt" 2>/dev/null; }
leaf() { # name ca cn extfile
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 1 -extfile "$4" -out "$1.crt" 2>/dev/null
}
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
printf 'extendedKeyUsage=clientAuth\n' >client.ext
ca serving-ca
ca front-proxy-ca
ca stranger-ca
leaf serving serving-ca localhost server.ext
leaf proxy front-proxy-ca front-proxy-client client.ext
leaf stranger stranger-ca front-proxy-client client.ext

redis-cli rpush "${PREFIX}q" a b c >/dev/null
cat >kubeconfig <<YAML
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
YAML
cat >config.yaml <<YAML
poll_interval: 500ms
kubernetes: {kubeconfig: $WORK/kubeconfig}
sources:
  jobs:
    redis: {url: "redis://127.0.0.1:6379/0"}
metrics:
  - {name: q, source: jobs, measure: length, redis: {type: list, key: "${PREFIX}q"}}
YAML

"$OLDPWD/$BIN" serve --config config.yaml --listen "127.0.0.1:${PORT}" --grpc-listen off \
  --tls-cert-file serving.crt --tls-private-key-file serving.key \
  --requestheader-client-ca-file front-proxy-ca.crt --requestheader-allowed-names front-proxy-client \
  --shutdown-delay 0s 2>log &
PID=$!
URL="https://localhost:${PORT}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/q"
wait_ready "https://localhost:${PORT}/readyz" --cacert serving-ca.crt || { cat log; exit 1; }

fail() { say "FAILED: $*"; cat log; exit 1; }

body=$(curl -s --cacert serving-ca.crt --cert proxy.crt --key proxy.key \
  -H 'X-Remote-User: system:kube-aggregator' -H 'X-Remote-Group: system:masters' "$URL")
echo "$body" | grep -q '"value":"3"' || fail "front-proxy certificate did not read the metric: $body"
say "ok: curl --cert front-proxy client --cacert serving CA reads the metric (value 3)"

code=$(curl -s -o /dev/null -w '%{http_code}' --cacert serving-ca.crt \
  -H 'X-Remote-User: system:kube-aggregator' -H 'X-Remote-Group: system:masters' "$URL")
[ "$code" = 401 ] || fail "without a client certificate: HTTP $code, expected 401"
say "ok: without a client certificate (headers spoofed) the answer is 401"

if curl -s -o /dev/null --cacert serving-ca.crt --cert stranger.crt --key stranger.key "$URL"; then
  fail "a certificate from another CA was accepted"
fi
say "ok: a client certificate from another CA fails the TLS handshake"
