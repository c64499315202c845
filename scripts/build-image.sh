#!/usr/bin/env bash
# `make image`: an OCI image archive of queue-metrics-adapter built without a Docker engine
# (none runs here), with umoci from Debian's packages. The same image the Dockerfile describes:
#   - the release binary (cargo build --release --locked) at /usr/local/bin/queue-metrics-adapter;
#   - a distroless-cc-like runtime from Debian 12 packages: libc6 and libgcc-s1 (what the binary
#     links, `ldd` checked below), netbase, the CA bundle of Debian's ca-certificates, a nonroot
#     user 65532 with its home, and /tmp;
#   - the Dockerfile's labels, USER 65532:65532, ENTRYPOINT, CMD and EXPOSE.
# Output: target/image/queue-metrics-adapter-<version>.oci.tar (an oci-archive), and the list
# of packages it holds next to it. Load or push it with skopeo (README "Deploying").
set -euo pipefail

say() { echo "[image] $*"; }
cd "$(dirname "$0")/.."
. scripts/lib/apt.sh
apt_install_missing umoci umoci
apt_install_missing skopeo skopeo

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
NAME=queue-metrics-adapter
OUT=target/image
ARCHIVE=$OUT/$NAME-$VERSION.oci.tar
WORK=$OUT/work
rm -rf "$WORK" && mkdir -p "$WORK/debs"

say "building the release binary"
cargo build --release --locked --bin "$NAME" --quiet
BIN=target/release/$NAME

say "fetching the runtime packages (Debian: libc6 libgcc-s1 netbase ca-certificates)"
(cd "$WORK/debs" && apt-get download -q libc6 libgcc-s1 netbase ca-certificates >/dev/null 2>&1) || {
  apt-get update -qq && (cd "$WORK/debs" && apt-get download -q libc6 libgcc-s1 netbase ca-certificates >/dev/null)
}

umoci init --layout "$WORK/layout"
umoci new --image "$WORK/layout:$VERSION"
umoci unpack --image "$WORK/layout:$VERSION" "$WORK/bundle" >/dev/null
ROOT=$WORK/bundle/rootfs
for deb in "$WORK"/debs/libc6_*.deb "$WORK"/debs/libgcc-s1_*.deb "$WORK"/debs/netbase_*.deb; do
  dpkg-deb -x "$deb" "$ROOT"
done
# Only the bundle ca-certificates generates (its package holds the separate certificates and
# the script that joins them); Debian's own bundle of the same package version.
mkdir -p "$ROOT/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
# Documentation and locales the binary never reads.
rm -rf "$ROOT/usr/share/doc" "$ROOT/usr/share/lintian" "$ROOT/usr/share/man" "$ROOT/usr/share/locale"
cat >"$ROOT/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$ROOT/etc/group" <<GROUP
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
mkdir -p "$ROOT/home/nonroot" "$ROOT/tmp" "$ROOT/usr/local/bin"
chown 65532:65532 "$ROOT/home/nonroot"
chmod 700 "$ROOT/home/nonroot"
chmod 1777 "$ROOT/tmp"
install -m 0755 "$BIN" "$ROOT/usr/local/bin/$NAME"

# Every library the binary links must be in the image.
for lib in $(ldd "$BIN" | awk '/=>/ {print $1} /ld-linux/ {print $1}' | sort -u); do
  base=$(basename "$lib")
  if ! find "$ROOT/lib" "$ROOT/usr/lib" "$ROOT/lib64" -name "$base" 2>/dev/null | grep -q .; then
    say "the binary links $base, which the image lacks" >&2
    exit 1
  fi
done

umoci repack --image "$WORK/layout:$VERSION" "$WORK/bundle"
labels=(
  --config.label "org.opencontainers.image.title=$NAME"
  --config.label "org.opencontainers.image.description=Queue depth, oldest-message age and GPU utilization for Kubernetes autoscaling (external metrics API, KEDA external scaler)"
  --config.label "org.opencontainers.image.version=$VERSION"
  --config.label "org.opencontainers.image.revision=$REVISION"
  --config.label "org.opencontainers.image.licenses=Apache-2.0"
  --config.label "org.opencontainers.image.base.name=debian:12 packages (libc6 libgcc-s1 netbase ca-certificates), as gcr.io/distroless/cc-debian12:nonroot"
)
umoci config --image "$WORK/layout:$VERSION" \
  --os linux --architecture amd64 \
  --config.user 65532:65532 \
  --config.workingdir /home/nonroot \
  --config.env PATH=/usr/local/bin:/usr/bin:/bin \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.entrypoint "/usr/local/bin/$NAME" \
  --config.cmd serve --config.cmd --config --config.cmd /etc/queue-metrics-adapter/config.yaml \
  --config.cmd --health-listen --config.cmd 0.0.0.0:8081 \
  --config.exposedports 6443/tcp --config.exposedports 9090/tcp --config.exposedports 8081/tcp \
  "${labels[@]}" \
  --history.created_by "scripts/build-image.sh (umoci)"
umoci gc --layout "$WORK/layout"

rm -f "$ARCHIVE"
tar -C "$WORK/layout" -cf "$ARCHIVE" .
for deb in "$WORK"/debs/*.deb; do
  echo "$(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)"
done >"$OUT/packages.txt"
rm -rf "$WORK/bundle" "$WORK/debs"
skopeo inspect "oci-archive:$ARCHIVE" >"$OUT/inspect.json"
say "ok: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)), tag $VERSION, packages: $(paste -sd, "$OUT/packages.txt")"
