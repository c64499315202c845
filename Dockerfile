# syntax=docker/dockerfile:1
# Multi-stage build of queue-metrics-adapter. No Docker engine runs on the machines this project
# is developed on, so this file is kept correct by construction; `make dist` builds the same
# release binary locally.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin queue-metrics-adapter \
 && cp target/release/queue-metrics-adapter /queue-metrics-adapter

# distroless: glibc, CA certificates, no shell; runs as the numeric non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="queue-metrics-adapter" \
      org.opencontainers.image.description="Queue depth and oldest-message age for Kubernetes autoscaling (external metrics API)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /queue-metrics-adapter /usr/local/bin/queue-metrics-adapter
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/queue-metrics-adapter"]
CMD ["serve", "--config", "/etc/queue-metrics-adapter/config.yaml", "--listen", "0.0.0.0:8080"]
