#!/usr/bin/env bash
# Proves the image of `make image` runs, without a container engine: unpacks the oci-archive
# (umoci), reads the entrypoint, command and user from the image's own config, and runs them
# from the unpacked root file system, chrooted, read-only, as that user, in a private network
# and mount namespace (unshare), with a config mounted where the manifests mount it and /tmp
# as an emptyDir-like tmpfs. Passes when /livez answers 200 and the process exits cleanly on
# SIGTERM. Needs root (chroot, mounts). Used by `make test` and `make image`.
set -euo pipefail

say() { echo "[image-check] $*"; }
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCHIVE=target/image/queue-metrics-adapter-$VERSION.oci.tar
[ -f "$ARCHIVE" ] || { say "no $ARCHIVE: run scripts/build-image.sh (make image)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { say "needs root (chroot and mounts)" >&2; exit 1; }
. scripts/lib/apt.sh
apt_install_missing umoci umoci
apt_install_missing ip iproute2
apt_install_missing curl curl

DIR=$(mktemp -d /tmp/qma-image-check.XXXXXX)
trap 'umount -R "$DIR/bundle/rootfs" 2>/dev/null || true; rm -rf "$DIR"' EXIT
mkdir -p "$DIR/layout" "$DIR/config"
tar -C "$DIR/layout" -xf "$ARCHIVE"
umoci unpack --image "$DIR/layout:$VERSION" "$DIR/bundle" >/dev/null
ROOT=$DIR/bundle/rootfs

# What the image says to run, from its runtime config (OCI runtime spec, made by umoci).
read -r UID_ GID_ < <(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["process"]; print(p["user"]["uid"], p["user"]["gid"])' "$DIR/bundle/config.json")
mapfile -t ARGS < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["process"]["args"]))' "$DIR/bundle/config.json")
[ "$UID_" = 65532 ] && [ "$GID_" = 65532 ] || { say "the image runs as $UID_:$GID_, not 65532:65532" >&2; exit 1; }
say "entrypoint and command: ${ARGS[*]} (user $UID_:$GID_)"
# The image and the Dockerfile describe the same container: entrypoint, command, user, ports
# and label names.
python3 - Dockerfile "$DIR/layout" "$VERSION" "${ARGS[@]}" <<'PY'
import json, re, sys
dockerfile, layout, version, args = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], sys.argv[4:]
index = json.load(open(f"{layout}/index.json"))
manifest = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == version)
blob = lambda d: json.load(open(f"{layout}/blobs/{d['digest'].replace(':', '/')}"))
config = blob(blob(manifest)["config"])["config"]
entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", dockerfile, re.M).group(1))
cmd = json.loads(re.search(r"^CMD (.*)$", dockerfile, re.M).group(1))
user = re.search(r"^USER (.*)$", dockerfile, re.M).group(1).strip()
ports = {f"{p}/tcp" for p in re.search(r"^EXPOSE (.*)$", dockerfile, re.M).group(1).split()}
labels = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", dockerfile))
problems = []
if args != entry + cmd: problems.append(f"runs {args}, the Dockerfile {entry + cmd}")
if config.get("User") != user: problems.append(f"user {config.get('User')}, the Dockerfile {user}")
if set(config.get("ExposedPorts", {})) != ports: problems.append(f"ports {sorted(config.get('ExposedPorts', {}))}, the Dockerfile {sorted(ports)}")
if not labels <= set(config.get("Labels", {})): problems.append(f"labels lack {sorted(labels - set(config.get('Labels', {})))}")
for p in problems: print(f"[image-check] FAILED: the image {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
say "the image's entrypoint, command, user, ports and labels match the Dockerfile"

cat >"$DIR/config/config.yaml" <<'YAML'
sources:
  jobs:
    redis: {url: "redis://127.0.0.1:6379/0"}
metrics:
  - {name: jobs, source: jobs, measure: length, redis: {type: list, key: "queue:jobs"}}
YAML
chmod 755 "$DIR/config" && chmod 644 "$DIR/config/config.yaml"
mkdir -p "$ROOT/etc/queue-metrics-adapter"   # the mount point, as the kubelet makes it

# In the new namespaces: loopback up, the config mounted read-only, /tmp a tmpfs, the root
# read-only; then the image's own command as its user, with the local-development flags from
# the environment (every flag reads QMA_<FLAG>), and /livez asked from inside.
unshare --mount --net --fork bash -s "$ROOT" "$DIR/config" "$UID_:$GID_" "${ARGS[@]}" <<'INNER'
set -euo pipefail
ROOT=$1 CONFIG=$2 USERSPEC=$3
shift 3
ip link set lo up
mount --make-rprivate /
mount --bind "$ROOT" "$ROOT"
mount --bind -o ro "$CONFIG" "$ROOT/etc/queue-metrics-adapter"
mount -t tmpfs -o size=16m,mode=1777 tmpfs "$ROOT/tmp"
mount -o remount,bind,ro "$ROOT"
if touch "$ROOT/usr/probe" 2>/dev/null; then echo "[image-check] the root is writable" >&2; exit 1; fi
env -i QMA_LISTEN=127.0.0.1:6443 QMA_INSECURE_HTTP=true QMA_DISABLE_AUTH=true QMA_GRPC_LISTEN=off \
  QMA_SHUTDOWN_DELAY=0s QMA_LOG_FORMAT=json \
  "$(command -v chroot)" --userspec="$USERSPEC" "$ROOT" "$@" >"$CONFIG/../adapter.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8081/livez) && [ "$code" = 200 ]; then
    echo "[image-check] /livez answered 200 from the image's root file system (read-only, user $USERSPEC)"
    kill -TERM $pid
    wait $pid && exit 0
    echo "[image-check] the adapter did not exit cleanly on SIGTERM" >&2; exit 1
  fi
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
echo "[image-check] /livez never answered 200; the adapter's output:" >&2
cat "$CONFIG/../adapter.log" >&2
kill -9 $pid 2>/dev/null || true
exit 1
INNER
say "ok: $ARCHIVE runs"
