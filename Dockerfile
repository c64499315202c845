# syntax=docker/dockerfile:1
# Multi-stage build of queue-metrics-adapter. No Docker engine runs on the machines this project
# is developed on; `make image` builds the same image with umoci and scripts/image-check.sh runs it
# and compares its entrypoint, command, user, ports and labels with this file (tests/shipped_manifests.rs checks
# that it copies everything the build reads); `make dist` builds the same release binary locally.
#
# Base images are pinned by tag here; pin them by digest in your CI
# (`docker buildx imagetools inspect <image>` prints it) and pass them as build arguments.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The whole build input and nothing else: manifest and lock (--locked: exactly the tested
# dependency versions), build script and the KEDA proto it compiles, sources, bench targets
# (declared in Cargo.toml, so cargo wants them present).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin queue-metrics-adapter \
 && cp target/release/queue-metrics-adapter /queue-metrics-adapter

# distroless cc: glibc, CA certificates, no shell, no package manager; numeric non-root user.
# No HEALTHCHECK: Kubernetes probes /livez and /readyz.
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="queue-metrics-adapter" \
      org.opencontainers.image.description="Queue depth, oldest-message age and GPU utilization for Kubernetes autoscaling (external metrics API, KEDA external scaler)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /queue-metrics-adapter /usr/local/bin/queue-metrics-adapter
USER 65532:65532
# 6443 external metrics API (HTTPS), 9090 KEDA gRPC, 8081 probes and /metrics (with --health-listen).
EXPOSE 6443 9090 8081
ENTRYPOINT ["/usr/local/bin/queue-metrics-adapter"]
CMD ["serve", "--config", "/etc/queue-metrics-adapter/config.yaml", "--health-listen", "0.0.0.0:8081"]
