//! The metric GET, answered from memory, against a baseline measured in the same run: the same
//! router answering the same bytes from a static buffer. The ratio is what our lookup, selector
//! matching and JSON rendering cost on top of the HTTP stack.
//!
//! `make bench` (or `cargo bench --bench serve`); results in BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use queue_metrics_adapter::api::{self, AppState, Routes, health::Health};
use queue_metrics_adapter::model::{Labels, Sample};
use queue_metrics_adapter::poller::Heartbeats;
use queue_metrics_adapter::store::{MetricInfo, Store};
use queue_metrics_adapter::telemetry::AdapterMetrics;
use tower::ServiceExt;

const PATH_ONE: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/embedding_queue_length";
const PATH_SELECT: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/queues?labelSelector=queue%3Dq-0500";

fn store() -> Arc<Store> {
    let info = |name: &str| MetricInfo {
        namespace_label: None,
        name: name.into(),
        source: "jobs".into(),
        description: None,
        namespaces: None,
    };
    let store = Store::new(
        vec![info("embedding_queue_length"), info("queues")],
        Duration::from_secs(3600),
    );
    let mut samples = vec![Sample {
        metric: "embedding_queue_length".into(),
        labels: Labels::from([
            ("queue".into(), "embeddings".into()),
            ("key".into(), "queue:embeddings".into()),
        ])
        .into(),
        value: Ok(1234.0),
    }];
    for i in 0..1000 {
        samples.push(Sample {
            metric: "queues".into(),
            labels: Labels::from([
                ("queue".into(), format!("q-{i:04}")),
                ("key".into(), format!("queue:q-{i:04}")),
            ])
            .into(),
            value: Ok(i as f64 + 0.5),
        });
    }
    store.record_poll("jobs", SystemTime::now(), Ok(samples));
    Arc::new(store)
}

fn adapter_router(store: Arc<Store>) -> Router {
    let health = Arc::new(Health::default());
    health.set_listening();
    let state = AppState {
        guard: None,
        provider: store.clone(),
        store,
        telemetry: AdapterMetrics::new(),
        health,
        heartbeats: Arc::new(Heartbeats::default()),
    };
    api::router(state, Routes::All)
}

async fn body_of(router: &Router, path: &str) -> Bytes {
    let response = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(response.status(), 200);
    to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let router = adapter_router(store());
    for (name, path) in [
        ("one_series", PATH_ONE),
        ("selector_1_of_1000", PATH_SELECT),
    ] {
        let bytes = rt.block_on(body_of(&router, path));
        // Baseline: the same route shape and middleware-free axum, answering the same bytes.
        let static_bytes = bytes.clone();
        let route = path.split('?').next().unwrap_or(path).to_string();
        let baseline: Router = Router::new().route(
            &route,
            get(move || {
                let b = static_bytes.clone();
                async move { ([("content-type", "application/json")], b) }
            }),
        );
        let mut group = c.benchmark_group(format!("metric_get/{name}"));
        group.bench_function("static_bytes_baseline", |b| {
            b.to_async(&rt)
                .iter(|| async { body_of(&baseline, path).await });
        });
        group.bench_function("adapter", |b| {
            b.to_async(&rt)
                .iter(|| async { body_of(&router, path).await });
        });
        group.finish();

        // The same two servers over loopback TCP with a keep-alive client: what an HPA sees.
        let adapter_addr = rt.block_on(listen(router.clone()));
        let baseline_addr = rt.block_on(listen(baseline));
        let client = {
            queue_metrics_adapter::tls::ensure_crypto_provider();
            reqwest::Client::new()
        };
        let mut group = c.benchmark_group(format!("metric_get_tcp/{name}"));
        for (label, addr) in [
            ("static_bytes_baseline", baseline_addr),
            ("adapter", adapter_addr),
        ] {
            let url = format!("http://{addr}{path}");
            group.bench_function(label, |b| {
                b.to_async(&rt).iter(|| async {
                    let r = client.get(&url).send().await.expect("request");
                    assert_eq!(r.status(), 200);
                    r.bytes().await.expect("body")
                });
            });
        }
        group.finish();
    }
}

async fn listen(router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

criterion_group!(benches, bench);
criterion_main!(benches);
