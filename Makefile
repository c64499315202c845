# Two commands matter: `make run` and `make test`. Both make sure Redis, RabbitMQ (with its
# management plugin), NATS (with JetStream) and PostgreSQL (user postgres, no password over TCP)
# run first.
CARGO ?= cargo
CONFIG ?= examples/local.yaml
LISTEN ?= 127.0.0.1:8080
GRPC ?= 127.0.0.1:9090

.PHONY: run test unit lint fmt bench dist services check clean demo fuzz image

services:
	@scripts/ensure-redis.sh
	@scripts/ensure-rabbitmq.sh
	@scripts/ensure-nats.sh
	@scripts/ensure-postgres.sh

## Build, make sure Redis, RabbitMQ, NATS (with JetStream) and PostgreSQL run, and serve
## examples/local.yaml in the foreground.
run: services
	$(CARGO) build --release
	@echo
	@echo "Serving $(CONFIG) on http://$(LISTEN), KEDA external scaler (gRPC) on $(GRPC) (Ctrl-C to stop). Try:"
	@echo "  redis-cli LPUSH queue:embeddings '{\"enqueued_at\":'\$$(date +%s%3N)'}'"
	@echo "  curl -s http://$(LISTEN)/apis/external.metrics.k8s.io/v1beta1/namespaces/default/embedding_queue_length"
	@echo "  curl -s http://$(LISTEN)/apis/external.metrics.k8s.io/v1beta1/namespaces/default/embedding_queue_oldest_age_seconds"
	@echo "  redis-cli XGROUP CREATE inference:requests workers '\$$' MKSTREAM   # the stream metrics answer 503 until it exists"
	@echo "  curl -s -u guest:guest -X PUT -H 'content-type: application/json' -d '{\"durable\":true}' http://127.0.0.1:15672/api/queues/%2F/embeddings"
	@echo "  curl -s -u guest:guest -H 'content-type: application/json' -d '{\"routing_key\":\"embeddings\",\"payload\":\"job\",\"payload_encoding\":\"string\",\"properties\":{\"timestamp\":'\$$(date +%s)'}}' http://127.0.0.1:15672/api/exchanges/%2F/amq.default/publish"
	@echo "  curl -s http://$(LISTEN)/apis/external.metrics.k8s.io/v1beta1/namespaces/default/rabbit_embeddings_ready"
	@echo "  curl -s http://$(LISTEN)/metrics"
	@echo
	./target/release/queue-metrics-adapter serve --config $(CONFIG) --listen $(LISTEN) --grpc-listen $(GRPC) --insecure-http --disable-auth --shutdown-delay 0s

## Autoscaling end to end on the local Redis and RabbitMQ: a burst of jobs, simulated workers, the
## HPA formula and KEDA activation applied to the adapter's answers; ends at zero replicas and
## writes target/demo/autoscaling.svg; then one burst scaled three ways (depth, age,
## workers_needed) compared in a table and target/demo/strategies.svg. Cleans up its keys and vhost.
demo: services
	$(CARGO) run --quiet --example demo

## Poll every source of $(CONFIG) once and print what would be served.
check: services
	$(CARGO) run --quiet -- check --config $(CONFIG)

## The whole suite: formatting, clippy, unit and integration tests against the local Redis (job
## libraries' real clients and workers included, installed under target/ at pinned versions),
## RabbitMQ, NATS with JetStream (and private nats-server processes: TLS, NKeys, accounts) and
## PostgreSQL (job tables; a database per test, as user postgres),
## the Redis tests a second time over RESP3, benchmarks run once as tests, `kubectl get --raw` against the adapter, and curl over HTTPS
## with and without a front-proxy client certificate, and every manifest under deploy/ validated
## offline (Kubernetes schemas + checkov, promtool for the alert rules), a few seconds of every fuzz
## target, the OCI image built and run (`make image`), and `make demo` to zero replicas.
test: export QMA_NEED_REDIS_TOOLS := 1
test: export QMA_NEED_NATS_SERVER := 1
test: services lint
	@scripts/ensure-prometheus.sh
	@scripts/ensure-job-libraries.sh
	$(CARGO) test --all-targets
	@echo "[make test] the Redis tests again over RESP3 (protocol=resp3)"
	QMA_TEST_REDIS_PROTOCOL=resp3 $(CARGO) test --test redis_source --test redis_missing_keys --test read_only --test redis_restart --test redis_tls --test keda
	$(CARGO) test --doc
	scripts/kubectl-raw-check.sh
	scripts/curl-tls-check.sh
	scripts/validate-manifests.sh
	scripts/fuzz.sh --smoke
	scripts/build-image.sh
	scripts/image-check.sh
	$(CARGO) run --quiet --example demo

unit:
	$(CARGO) test --lib

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

## Criterion benchmarks (needs Redis for the poll bench). Numbers go in BENCHMARKS.md.
bench: services
	@scripts/ensure-job-libraries.sh postgres
	$(CARGO) bench --bench serve --bench poll --bench cluster --bench wake --bench keda --bench dcgm --bench tls --bench inference --bench postgres --bench postgres_wake --bench keda_scale

## Every fuzz target for FUZZ_RUNS executions (default 10 million) or FUZZ_SECONDS (default
## 1800) each; figures go in RELIABILITY.md. Installs cargo-fuzz if missing.
fuzz:
	scripts/fuzz.sh

## An OCI image archive without a Docker engine (umoci), target/image/queue-metrics-adapter-<version>.oci.tar,
## then run from its unpacked root file system (read-only, non-root) until /livez answers.
image:
	scripts/build-image.sh
	scripts/image-check.sh

## A release binary.
dist:
	$(CARGO) build --release --locked
	@ls -l target/release/queue-metrics-adapter

clean:
	$(CARGO) clean
