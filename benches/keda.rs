//! KEDA's `GetMetrics` at 1,000 concurrent calls on one HTTP/2 channel, against a baseline in the
//! same run: the same number of concurrent calls to `StreamMetricSpec`, which the server answers
//! `UNIMPLEMENTED` without any work, i.e. the gRPC stack alone.
//!
//! `make bench` (or `cargo bench --bench keda`); results in BENCHMARKS.md.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use queue_metrics_adapter::api::keda::pb::external_scaler_client::ExternalScalerClient;
use queue_metrics_adapter::api::keda::pb::{GetMetricsRequest, ScaledObjectRef};
use queue_metrics_adapter::api::keda::{KedaScaler, metadata};
use tokio_util::sync::CancellationToken;

mod support;

const CONCURRENT: usize = 1000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = support::polled_store(
        &["jobs"],
        vec![support::sample("jobs", &[("queue", "embed")], 42.0)],
    );
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = KedaScaler::new(
            store,
            CancellationToken::new(),
            queue_metrics_adapter::telemetry::Telemetry::new(),
        )
        .into_service();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        addr
    });
    let client = rt.block_on(async {
        for _ in 0..50 {
            if let Ok(c) = ExternalScalerClient::connect(format!("http://{addr}")).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gRPC server did not start");
    });
    let object = ScaledObjectRef {
        name: "so".into(),
        namespace: "default".into(),
        scaler_metadata: metadata(&[("metricName", "jobs")]),
    };

    let mut group = c.benchmark_group("keda_1000_concurrent_calls");
    group.sample_size(20);
    group.bench_function("unimplemented_baseline", |b| {
        b.to_async(&rt).iter(|| {
            let client = client.clone();
            let object = object.clone();
            async move {
                let calls = (0..CONCURRENT).map(|_| {
                    let mut c = client.clone();
                    let o = object.clone();
                    tokio::spawn(async move { c.stream_metric_spec(o).await.is_err() })
                });
                for call in calls.collect::<Vec<_>>() {
                    assert!(call.await.expect("task"));
                }
            }
        });
    });
    group.bench_function("get_metrics", |b| {
        b.to_async(&rt).iter(|| {
            let client = client.clone();
            let object = object.clone();
            async move {
                let calls = (0..CONCURRENT).map(|_| {
                    let mut c = client.clone();
                    let r = GetMetricsRequest {
                        scaled_object_ref: Some(object.clone()),
                        metric_name: "jobs".into(),
                    };
                    tokio::spawn(async move {
                        c.get_metrics(r)
                            .await
                            .expect("get_metrics")
                            .into_inner()
                            .metric_values[0]
                            .metric_value
                    })
                });
                for call in calls.collect::<Vec<_>>() {
                    assert_eq!(call.await.expect("task"), 42);
                }
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
