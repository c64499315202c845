//! The KEDA external scaler over real gRPC (a client generated from the same proto) and the
//! metrics-api JSON endpoint, against the real Redis.

mod common;

use std::time::{Duration, Instant};

use common::{Adapter, Cleanup, cmd, connect, prefix, redis_url};
use queue_metrics_adapter::api::keda::metadata;
use queue_metrics_adapter::api::keda::pb::external_scaler_client::ExternalScalerClient;
use queue_metrics_adapter::api::keda::pb::{GetMetricsRequest, ScaledObjectRef};
use tonic::Code;
use tonic::transport::Channel;

fn config(p: &str) -> String {
    format!(
        "poll_interval: 200ms\ndiscovery_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\n  down:\n    redis: {{url: \"redis://127.0.0.1:1/0\"}}\nmetrics:\n  - {{name: jobs, source: jobs, measure: length, redis: {{type: list, key: \"{p}jobs\"}}}}\n  - {{name: queues, source: jobs, measure: length, redis: {{type: list, pattern: \"{p}q:*\"}}}}\n  - {{name: broken, source: down, measure: length, redis: {{type: list, key: x}}}}\n  - {{name: absent-stream, source: jobs, measure: lag, redis: {{type: stream, key: \"{p}no-stream\", group: g}}}}\n",
        redis_url()
    )
}

async fn client(a: &Adapter) -> ExternalScalerClient<Channel> {
    let addr = a
        .running
        .as_ref()
        .and_then(|r| r.grpc_addr)
        .expect("gRPC listens");
    ExternalScalerClient::connect(format!("http://{addr}"))
        .await
        .expect("gRPC connect")
}

fn object(pairs: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "embed-workers".into(),
        namespace: "default".into(),
        scaler_metadata: metadata(pairs),
    }
}

#[tokio::test]
async fn spec_metrics_and_activation_come_from_the_store() {
    let p = prefix("keda-spec");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    cmd::<i64>(
        &mut c,
        &[
            "LPUSH",
            &format!("{p}jobs"),
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "7",
        ],
    )
    .await;
    let a = Adapter::start(&config(&p)).await;
    a.ready().await;
    let mut g = client(&a).await;

    let spec = g
        .get_metric_spec(object(&[("metricName", "jobs"), ("targetValue", "2.5")]))
        .await
        .expect("spec")
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(spec.metric_specs[0].metric_name, "jobs");
    assert_eq!(spec.metric_specs[0].target_size_float, 2.5);
    assert_eq!(
        spec.metric_specs[0].target_size, 3,
        "int field for KEDA < 2.17, rounded"
    );

    let request = GetMetricsRequest {
        scaled_object_ref: Some(object(&[("metricName", "jobs"), ("targetValue", "5")])),
        metric_name: "jobs".into(),
    };
    let values = g.get_metrics(request).await.expect("metrics").into_inner();
    assert_eq!(values.metric_values[0].metric_name, "jobs");
    assert_eq!(values.metric_values[0].metric_value, 7);
    assert_eq!(values.metric_values[0].metric_value_float, 7.0);

    // Activation is value > activationValue (default 0), around the threshold.
    for (activation, want) in [("0", true), ("6.9", true), ("7", false), ("100", false)] {
        let r = g
            .is_active(object(&[
                ("metricName", "jobs"),
                ("activationValue", activation),
            ]))
            .await
            .expect("is_active");
        assert_eq!(r.into_inner().result, want, "activationValue {activation}");
    }
    a.stop().await;
}

#[tokio::test]
async fn aggregates_combine_several_series() {
    let p = prefix("keda-agg");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}q:a"), "1", "2"]).await;
    cmd::<i64>(
        &mut c,
        &["LPUSH", &format!("{p}q:b"), "1", "2", "3", "4", "5", "6"],
    )
    .await;
    let a = Adapter::start(&config(&p)).await;
    a.ready().await;
    let mut g = client(&a).await;
    for (aggregate, want) in [("sum", 8.0), ("max", 6.0), ("mean", 4.0)] {
        let request = GetMetricsRequest {
            scaled_object_ref: Some(object(&[
                ("metricName", "queues"),
                ("aggregate", aggregate),
            ])),
            metric_name: "queues".into(),
        };
        let v = g.get_metrics(request).await.expect("metrics").into_inner();
        assert_eq!(v.metric_values[0].metric_value_float, want, "{aggregate}");
    }
    let request = GetMetricsRequest {
        scaled_object_ref: Some(object(&[
            ("metricName", "queues"),
            ("labelSelector", "queue=b"),
        ])),
        metric_name: "queues".into(),
    };
    assert_eq!(
        g.get_metrics(request)
            .await
            .expect("metrics")
            .into_inner()
            .metric_values[0]
            .metric_value,
        6
    );
    a.stop().await;
}

#[tokio::test]
async fn failures_are_grpc_errors_never_zero() {
    let p = prefix("keda-errors");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = Adapter::start(&config(&p)).await;
    a.ready().await;
    let mut g = client(&a).await;
    let code = |r: Result<
        tonic::Response<queue_metrics_adapter::api::keda::pb::IsActiveResponse>,
        tonic::Status,
    >| r.map(|_| ()).expect_err("an error");

    let e = code(g.is_active(object(&[("metricName", "nope")])).await);
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = code(g.is_active(object(&[("metricName", "broken")])).await);
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("cannot connect"), "{e}");
    let e = code(
        g.is_active(object(&[("metricName", "absent-stream")]))
            .await,
    );
    assert_eq!(
        e.code(),
        Code::Unavailable,
        "a missing stream is not 0: {e}"
    );
    assert!(e.message().contains("does not exist in db 0"), "{e}");
    let e = code(
        g.is_active(object(&[
            ("metricName", "jobs"),
            ("labelSelector", "queue=none"),
        ]))
        .await,
    );
    assert_eq!(e.code(), Code::NotFound, "no matching series: {e}");
    // A list pattern that matches nothing is an empty backlog, not an unknown: 0, inactive.
    let r = g
        .is_active(object(&[
            ("metricName", "queues"),
            ("labelSelector", "queue=none"),
        ]))
        .await
        .expect("an empty backlog");
    assert!(!r.into_inner().result);
    let r = g
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object(&[("metricName", "queues")])),
            metric_name: "queues".into(),
        })
        .await
        .expect("nothing matches the pattern yet");
    assert_eq!(r.into_inner().metric_values[0].metric_value_float, 0.0);
    let e = code(g.is_active(object(&[("labelSelector", "a=b")])).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("metricName"), "{e}");
    let e = code(
        g.is_active(object(&[
            ("metricName", "jobs"),
            ("activationValue", "lots"),
        ]))
        .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("activationValue"), "{e}");
    let e = g
        .get_metric_spec(object(&[("metricName", "jobs")]))
        .await
        .expect_err("no target");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("targetValue"), "{e}");
    let e = g
        .get_metric_spec(object(&[("metricName", "nope"), ("targetValue", "1")]))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    let e = g
        .stream_is_active(object(&[("metricName", "nope")]))
        .await
        .map(|_| ())
        .expect_err("unknown");
    assert_eq!(
        e.code(),
        Code::NotFound,
        "a stream for an unknown metric is refused, not left silent"
    );
    let e = g
        .stream_metric_spec(object(&[("metricName", "jobs")]))
        .await
        .expect_err("unimplemented");
    assert_eq!(e.code(), Code::Unimplemented);
    let (_, metrics) = a.get_text("/metrics").await;
    for want in [
        "qma_grpc_requests_total{code=\"NotFound\",method=\"IsActive\"}",
        "qma_grpc_requests_total{code=\"Unavailable\",method=\"IsActive\"} 2",
        "qma_grpc_requests_total{code=\"InvalidArgument\",method=\"GetMetricSpec\"} 1",
    ] {
        assert!(metrics.contains(want), "/metrics lacks {want}:\n{metrics}");
    }
    // An empty queue is 0, and inactive: that is a value, not a failure.
    let r = g
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object(&[("metricName", "jobs")])),
            metric_name: "jobs".into(),
        })
        .await
        .expect("empty queue");
    assert_eq!(r.into_inner().metric_values[0].metric_value_float, 0.0);
    a.stop().await;
}

#[tokio::test]
async fn stream_is_active_wakes_within_a_poll_interval_and_serves_200_streams() {
    let p = prefix("keda-stream");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = Adapter::start(&config(&p)).await;
    a.ready().await;
    let g = client(&a).await;
    let mut streams = Vec::new();
    for _ in 0..200 {
        let mut g = g.clone();
        let s = g
            .stream_is_active(object(&[("metricName", "jobs")]))
            .await
            .expect("stream")
            .into_inner();
        streams.push(s);
    }
    // Each stream opens with the current state: the queue is empty.
    for s in &mut streams {
        let first = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("first message")
            .expect("ok")
            .expect("some");
        assert!(!first.result);
    }
    let mut c = connect(&redis_url()).await;
    let pushed = Instant::now();
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}jobs"), "first-job"]).await;
    let mut latencies = Vec::new();
    for s in &mut streams {
        let m = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("wake-up")
            .expect("ok")
            .expect("some");
        assert!(m.result);
        latencies.push(pushed.elapsed());
    }
    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "wake-up latency (first job pushed -> StreamIsActive true): first {:?}, all 200 streams by {worst:?}",
        latencies[0]
    );
    // One poll interval (200 ms) plus the poll itself and delivery.
    assert!(worst < Duration::from_millis(1000), "woke in {worst:?}");

    // Shutdown ends the streams cleanly.
    a.stop().await;
    for s in &mut streams {
        let end = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("stream ends");
        assert!(
            matches!(end, Ok(None)) || end.is_err(),
            "stream ended: {end:?}"
        );
    }
}

#[tokio::test]
async fn metrics_api_endpoint_answers_like_the_grpc_scaler() {
    let p = prefix("keda-http");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}q:a"), "1", "2"]).await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}q:b"), "1", "2", "3"]).await;
    let a = Adapter::start(&config(&p)).await;
    a.ready().await;
    let (status, body) = a.get_json("/keda/v1/namespaces/default/queues").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], 5.0);
    assert_eq!(body["series"], 2);
    assert_eq!(body["active"], true);
    assert!(
        body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    let (_, body) = a
        .get_json("/keda/v1/namespaces/default/queues?aggregate=max&activationValue=3")
        .await;
    assert_eq!(
        (body["value"].as_f64(), body["active"].as_bool()),
        (Some(3.0), Some(false)),
        "{body}"
    );
    let (_, body) = a
        .get_json("/keda/v1/namespaces/default/queues?labelSelector=queue%3Da")
        .await;
    assert_eq!(body["value"], 2.0);
    assert_eq!(a.get_json("/keda/v1/namespaces/default/nope").await.0, 404);
    let (status, body) = a
        .get_json("/keda/v1/namespaces/default/queues?labelSelector=queue%3Dnone")
        .await;
    assert_eq!(
        (status, body["value"].as_f64(), body["active"].as_bool()),
        (200, Some(0.0), Some(false)),
        "a list pattern matching nothing is an empty backlog: {body}"
    );
    assert_eq!(
        a.get_json("/keda/v1/namespaces/default/jobs?labelSelector=queue%3Dnone")
            .await
            .0,
        404,
        "an exact key's selector that matches nothing is a mistake, not a 0"
    );
    let (status, body) = a
        .get_json("/keda/v1/namespaces/default/queues?aggregate=median")
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap_or("").contains("aggregate"),
        "{body}"
    );
    assert_eq!(
        a.get_json("/keda/v1/namespaces/default/broken").await.0,
        503
    );
    a.stop().await;
}

#[tokio::test]
async fn streams_beyond_the_cap_and_huge_messages_are_refused() {
    let p = prefix("keda-bounds");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = Adapter::start_with(&config(&p), |s| s.grpc_max_streams = 3).await;
    a.ready().await;
    let g = client(&a).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut g = g.clone();
        let mut s = g
            .stream_is_active(object(&[("metricName", "jobs")]))
            .await
            .expect("within the cap")
            .into_inner();
        s.message().await.expect("first state").expect("some");
        open.push(s);
    }
    let (_, metrics) = a.get_text("/metrics").await;
    assert!(metrics.contains("qma_grpc_streams_open 3"), "{metrics}");
    let mut g4 = g.clone();
    let e = g4
        .stream_is_active(object(&[("metricName", "jobs")]))
        .await
        .map(|_| ())
        .expect_err("a fourth stream");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("limit"), "{e}");
    // A stream that closes gives its slot back.
    drop(open.pop());
    let start = Instant::now();
    loop {
        let mut g = g.clone();
        match g.stream_is_active(object(&[("metricName", "jobs")])).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "the slot of a closed stream came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // A selector of a megabyte is refused before it is parsed.
    let huge = format!("queue in ({})", "q,".repeat(512 * 1024));
    let e = g
        .clone()
        .is_active(object(&[("metricName", "jobs"), ("labelSelector", &huge)]))
        .await
        .map(|_| ())
        .expect_err("too large");
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e}"
    );
    assert!(
        e.message().len() < 1000,
        "not echoed: {} bytes",
        e.message().len()
    );
    a.stop().await;
}

/// A TCP relay to `target` that forwards until `freeze` is set, then stops moving bytes while
/// keeping both sockets open: a KEDA pod that vanished without closing its connection.
async fn freezing_relay(
    target: std::net::SocketAddr,
    freeze: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(target)
                .await
                .expect("connect");
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, freeze.clone()));
            tokio::spawn(pump(sr, cw, freeze.clone()));
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    freeze: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if freeze.load(std::sync::atomic::Ordering::SeqCst) {
            // Hold both sockets and forward nothing until the test ends.
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_vanished_keda_pod_loses_its_streams_to_keepalive_pings() {
    let p = prefix("keda-vanished");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    // Pings every idle/3 = 1 s, unanswered after 1 s: the dead peer is found within ~2 s.
    let a = Adapter::start_with(&config(&p), |s| {
        s.grpc_max_streams = 1;
        s.limits.idle_timeout = Duration::from_secs(3);
        s.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    a.ready().await;
    let grpc = a
        .running
        .as_ref()
        .and_then(|r| r.grpc_addr)
        .expect("gRPC listens");
    let freeze = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay = freezing_relay(grpc, freeze.clone()).await;
    // The client's own keepalive is off (tonic's default), as a pod that is gone sends nothing.
    let mut doomed = ExternalScalerClient::connect(format!("http://{relay}"))
        .await
        .expect("connect through the relay");
    let mut stream = doomed
        .stream_is_active(object(&[("metricName", "jobs")]))
        .await
        .expect("the one stream")
        .into_inner();
    stream.message().await.expect("first state").expect("some");
    let mut g = client(&a).await;
    let e = g
        .stream_is_active(object(&[("metricName", "jobs")]))
        .await
        .map(|_| ())
        .expect_err("the slot is taken");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");

    freeze.store(true, std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    loop {
        match g.stream_is_active(object(&[("metricName", "jobs")])).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "the stream of a peer that stopped answering pings was never closed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("dead peer's stream released after {:?}", start.elapsed());
    drop(stream);
    a.stop().await;
}
