//! The metric GET, answered from memory, against a baseline measured in the same run: axum's
//! router with one route answering the same bytes from a static buffer. In memory the adapter is
//! the `Service` its listeners run (guard off); over TCP it is that listener, the baseline
//! `axum::serve`. The ratio is what our lookup, selector matching, JSON rendering and telemetry
//! cost on top of the HTTP stack.
//!
//! `make bench` (or `cargo bench --bench serve`); results in BENCHMARKS.md.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use queue_metrics_adapter::api::Routes;
use queue_metrics_adapter::api::listener::{Limits, serve};
use queue_metrics_adapter::api::service::Service;
use queue_metrics_adapter::store::Store;
use tower::ServiceExt;

mod support;

const PATH_ONE: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/embedding_queue_length";
const PATH_SELECT: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/queues?labelSelector=queue%3Dq-0500";

fn store() -> Arc<Store> {
    let mut samples = vec![support::sample(
        "embedding_queue_length",
        &[("queue", "embeddings"), ("key", "queue:embeddings")],
        1234.0,
    )];
    for i in 0..1000 {
        let queue = format!("q-{i:04}");
        let key = format!("queue:{queue}");
        samples.push(support::sample(
            "queues",
            &[("queue", &queue), ("key", &key)],
            i as f64 + 0.5,
        ));
    }
    support::polled_store(&["embedding_queue_length", "queues"], samples)
}

fn adapter(store: Arc<Store>) -> Service {
    Service::new(support::app_state(store, None), Routes::All)
}

fn get_request(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

async fn body_of(router: &Router, path: &str) -> Bytes {
    let response = router
        .clone()
        .oneshot(get_request(path))
        .await
        .expect("infallible");
    bytes_of(response).await
}

async fn answer_of(service: &Service, path: &str) -> Bytes {
    bytes_of(service.answer(get_request(path)).await).await
}

async fn bytes_of(response: axum::response::Response) -> Bytes {
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
    let service = adapter(store());
    for (name, path) in [
        ("one_series", PATH_ONE),
        ("selector_1_of_1000", PATH_SELECT),
    ] {
        let bytes = rt.block_on(answer_of(&service, path));
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
                .iter(|| async { answer_of(&service, path).await });
        });
        group.finish();

        // The same two servers over loopback TCP with a keep-alive client: what an HPA sees.
        let adapter_addr = rt.block_on(listen_adapter(service.clone()));
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

async fn listen_adapter(service: Service) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(
        listener,
        service,
        None,
        Limits::default(),
        tokio_util::sync::CancellationToken::new(),
    ));
    addr
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
