//! End to end for model-server signals: stand-in vLLM and Triton servers on loopback serving
//! real `/metrics` output (values changed between polls) -> adapter (pod watch, concurrent
//! scrapes, presets, owner resolution, per-workload combination) -> external metrics API.
//! No real API server runs here: the pods (their IPs and container ports pointing at the
//! stand-ins), ReplicaSets and owners come from `common::kube_stub` through a kubeconfig. The
//! Prometheus mode reads a real Prometheus scraping the stand-ins.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Adapter;
use common::gpu::{by_workload, close, eventually, get, until_unavailable};
use common::kube_stub::{KubeStub, replicaset};
use common::model_server::{ModelServer, pod};
use common::prometheus::Prometheus;
use serde_json::json;

/// vLLM 0.4.3: only the old KV-cache name, one series per family.
const VLLM_OLD: &str = include_str!("fixtures/vllm-0.4.3-metrics.txt");
/// vLLM 0.10.2: both KV-cache names, two engines.
const VLLM_BOTH: &str = include_str!("fixtures/vllm-0.10.2-metrics.txt");
/// Triton 2.38.0.
const TRITON: &str = include_str!("fixtures/triton-2.38.0-metrics.txt");

/// `body` with the values of `family`'s series replaced, in order, by `values`.
fn with(body: &str, family: &str, values: &[f64]) -> String {
    let mut next = values.iter();
    body.lines()
        .map(|line| {
            let is_family =
                line.starts_with(&format!("{family}{{")) || line.starts_with(&format!("{family} "));
            match (is_family, is_family.then(|| next.next()).flatten()) {
                (true, Some(v)) => {
                    let (series, _) = line.rsplit_once(' ').expect("a sample line");
                    format!("{series} {v}\n")
                }
                _ => format!("{line}\n"),
            }
        })
        .collect()
}

/// A vLLM 0.10.2 body: waiting per engine, KV usage per engine under both names.
fn vllm_new(waiting: [f64; 2], kv: [f64; 2]) -> String {
    let body = with(VLLM_BOTH, "vllm:num_requests_waiting", &waiting);
    let body = with(&body, "vllm:kv_cache_usage_perc", &kv);
    with(&body, "vllm:gpu_cache_usage_perc", &kv)
}

/// A vLLM 0.4.3 body (old KV name only).
fn vllm_old(waiting: f64, kv: f64) -> String {
    let body = with(VLLM_OLD, "vllm:num_requests_waiting", &[waiting]);
    with(&body, "vllm:gpu_cache_usage_perc", &[kv])
}

fn labels() -> serde_json::Value {
    json!({"server": "vllm"})
}

/// A config with one `inference` source `llm`, polled every `interval`.
fn config(stub: &KubeStub, interval: &str, source: &str, metrics: &str) -> String {
    format!(
        "poll_interval: {interval}\npoll_timeout: 3s\nkubernetes: {{kubeconfig: {}}}\nsources:\n  llm:\n    inference:\n{source}metrics:\n{metrics}",
        stub.kubeconfig().display()
    )
}

async fn value(adapter: &Adapter, ns: &str, metric: &str, selector: &str) -> Option<f64> {
    let (status, body) = get(adapter, ns, metric, selector).await;
    (status == 200)
        .then(|| by_workload(&body).first().map(|v| v.2))
        .flatten()
}

/// Waits until `metric` for `selector` in `ns` is `want` (bounded).
async fn until(adapter: &Adapter, ns: &str, metric: &str, selector: &str, want: f64) {
    eventually(
        &format!("{metric}{{{selector}}} in {ns} = {want}"),
        || async {
            value(adapter, ns, metric, selector)
                .await
                .filter(|v| close(*v, want))
        },
    )
    .await;
}

#[tokio::test]
async fn server_queues_per_workload_through_pod_churn_timeouts_and_bad_payloads() {
    let stub = KubeStub::start().await;
    let a = ModelServer::start(&vllm_new([5.0, 1.0], [0.5, 0.9])).await;
    let b = ModelServer::start(&vllm_old(3.0, 0.3)).await;
    let c = ModelServer::start(&vllm_old(1000.0, 1.0)).await;
    let d = ModelServer::start(&vllm_old(4.0, 0.4)).await;
    let embed = ModelServer::start(&vllm_old(2.0, 0.2)).await;
    let other = ModelServer::start(&vllm_old(7.0, 0.7)).await;
    let unselected = ModelServer::start(&vllm_old(500.0, 1.0)).await;
    let rs = ("ReplicaSet", "apps/v1", "chat-7f");
    stub.apply(
        "replicasets",
        replicaset("inference", "chat-7f", Some("chat")),
    );
    stub.apply(
        "replicasets",
        replicaset("team-b", "other-5d", Some("other")),
    );
    stub.apply(
        "pods",
        pod("inference", "chat-7f-a", rs, labels(), a.port, true),
    );
    stub.apply(
        "pods",
        pod("inference", "chat-7f-b", rs, labels(), b.port, true),
    );
    // Not ready: it serves no traffic, so its queue is not the workload's.
    stub.apply(
        "pods",
        pod("inference", "chat-7f-c", rs, labels(), c.port, false),
    );
    let sts = ("StatefulSet", "apps/v1", "embed");
    stub.apply(
        "pods",
        pod("inference", "embed-0", sts, labels(), embed.port, true),
    );
    let other_rs = ("ReplicaSet", "apps/v1", "other-5d");
    stub.apply(
        "pods",
        pod("team-b", "other-5d-x", other_rs, labels(), other.port, true),
    );
    // Not selected: another app's pod in the same namespace.
    stub.apply(
        "pods",
        pod(
            "inference",
            "chat-7f-z",
            rs,
            json!({"server": "tgi"}),
            unselected.port,
            true,
        ),
    );

    let source = "      preset: vllm\n      pods: {selector: \"server=vllm\", port: http}\n      scrape_timeout: 500ms\n";
    let metrics = "  - {name: vllm_waiting, source: llm, measure: waiting_requests}\n  - {name: vllm_waiting_max, source: llm, measure: waiting_requests, inference: {workload: max}}\n  - {name: vllm_kv_usage, source: llm, measure: kv_cache_usage_ratio}\n";
    let adapter = Adapter::start(&config(&stub, "100ms", source, metrics)).await;
    adapter.ready().await;

    // Engines add up within a pod, pods within the workload; the not-ready and unselected pods
    // are not read.
    let (status, body) = get(&adapter, "inference", "vllm_waiting", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        by_workload(&body),
        vec![
            ("chat".into(), "Deployment".into(), 9.0),
            ("embed".into(), "StatefulSet".into(), 2.0)
        ]
    );
    assert_eq!(body["items"][0]["metricLabels"]["namespace"], "inference");
    assert_eq!(c.scrapes() + unselected.scrapes(), 0);
    // KV usage: each pod's fullest engine (0.9, or the old name's 0.3), then their mean; the
    // 0.10.2 pod exports both names and is counted once.
    until(&adapter, "inference", "vllm_kv_usage", "workload=chat", 0.6).await;
    until(
        &adapter,
        "inference",
        "vllm_kv_usage",
        "workload=embed",
        0.2,
    )
    .await;

    // Namespaces see only their own workloads.
    let (_, body) = get(&adapter, "team-b", "vllm_waiting", "").await;
    assert_eq!(
        by_workload(&body),
        vec![("other".into(), "Deployment".into(), 7.0)]
    );
    let (_, body) = get(&adapter, "team-b", "vllm_waiting", "workload=chat").await;
    assert_eq!(body["items"], json!([]), "{body}");

    // Values change between polls; the renamed family is read under its new name alone.
    a.set(
        &vllm_new([10.0, 1.0], [0.5, 0.9]).replace("vllm:gpu_cache_usage_perc", "vllm:other_gauge"),
    );
    until(&adapter, "inference", "vllm_waiting", "workload=chat", 14.0).await;
    until(&adapter, "inference", "vllm_kv_usage", "workload=chat", 0.6).await;

    // Churn: a pod added, a pod turning ready and back, a pod deleted.
    stub.apply(
        "pods",
        pod("inference", "chat-7f-d", rs, labels(), d.port, true),
    );
    until(&adapter, "inference", "vllm_waiting", "workload=chat", 18.0).await;
    stub.apply(
        "pods",
        pod("inference", "chat-7f-c", rs, labels(), c.port, true),
    );
    until(
        &adapter,
        "inference",
        "vllm_waiting",
        "workload=chat",
        1018.0,
    )
    .await;
    stub.apply(
        "pods",
        pod("inference", "chat-7f-c", rs, labels(), c.port, false),
    );
    until(&adapter, "inference", "vllm_waiting", "workload=chat", 18.0).await;
    stub.delete("pods", "inference", "chat-7f-b");
    until(&adapter, "inference", "vllm_waiting", "workload=chat", 15.0).await;

    // A pod that times out is an unknown member: the sum is unknown (503, the HPA holds),
    // never the other pods' partial sum; the max and the mean use the pods that answered.
    d.delay(Duration::from_secs(3));
    let message = until_unavailable(&adapter, "inference", "vllm_waiting", "workload=chat").await;
    assert!(message.contains("did not report"), "{message}");
    assert_eq!(
        value(&adapter, "inference", "vllm_waiting_max", "workload=chat").await,
        Some(11.0)
    );
    assert_eq!(
        value(&adapter, "inference", "vllm_waiting", "workload=embed").await,
        Some(2.0),
        "other workloads are unaffected"
    );
    d.delay(Duration::ZERO);
    until(&adapter, "inference", "vllm_waiting", "workload=chat", 15.0).await;

    // Bad payloads: an HTML page (no family) and an error status are unknown, never 0.
    d.set("<html><body>502 Bad Gateway</body></html>\n");
    until_unavailable(&adapter, "inference", "vllm_waiting", "workload=chat").await;
    d.set(&vllm_old(4.0, 0.4));
    until(&adapter, "inference", "vllm_waiting", "workload=chat", 15.0).await;
    d.status(500);
    until_unavailable(&adapter, "inference", "vllm_waiting", "workload=chat").await;
    d.status(200);
    until(&adapter, "inference", "vllm_waiting", "workload=chat", 15.0).await;

    // Every pod down: the source as a whole is down.
    for s in [&a, &d, &embed, &other] {
        s.status(503);
    }
    until_unavailable(&adapter, "inference", "vllm_waiting", "workload=embed").await;

    // The adapter only ever asked for GET /metrics.
    for s in [&a, &b, &c, &d, &embed, &other, &unselected] {
        for request in s.requests() {
            assert_eq!(request, "GET /metrics", "only scrapes");
        }
    }
}

#[tokio::test]
async fn counter_rates_and_queue_time_across_a_restarted_server() {
    let stub = KubeStub::start().await;
    // Generation tokens grow 50 per second from `started` (a restart sets it to now).
    let started = Arc::new(Mutex::new(Instant::now()));
    let vllm = ModelServer::start("").await;
    let since = started.clone();
    vllm.render(move || {
        let t = since.lock().expect("lock").elapsed().as_secs_f64();
        with(
            VLLM_OLD,
            "vllm:generation_tokens_total",
            &[(50.0 * t).floor()],
        )
    });
    // Triton densenet: 20 requests per second, each queued 2 ms.
    let triton = ModelServer::start("").await;
    let t0 = Instant::now();
    triton.render(move || {
        let n = (20.0 * t0.elapsed().as_secs_f64()).floor();
        let body = with(
            TRITON,
            "nv_inference_request_success",
            &[0.0, 0.0, 0.0, 0.0, n],
        );
        with(
            &body,
            "nv_inference_queue_duration_us",
            &[0.0, 0.0, 0.0, 0.0, n * 2000.0],
        )
    });
    let sts = ("StatefulSet", "apps/v1", "llm");
    stub.apply(
        "pods",
        pod(
            "ml",
            "llm-0",
            sts,
            json!({"server": "vllm"}),
            vllm.port,
            true,
        ),
    );
    let tsts = ("StatefulSet", "apps/v1", "triton");
    stub.apply(
        "pods",
        pod(
            "ml",
            "triton-0",
            tsts,
            json!({"server": "triton"}),
            triton.port,
            true,
        ),
    );
    // The Triton source names its container port by number.
    let config = format!(
        "poll_interval: 100ms\npoll_timeout: 2s\nkubernetes: {{kubeconfig: {}}}\nsources:\n  llm:\n    inference:\n      preset: vllm\n      pods: {{namespace: ml, selector: \"server=vllm\", port: http}}\n      rate_window: 2s\n  triton:\n    inference:\n      preset: triton\n      pods: {{namespace: ml, selector: \"server=triton\", port: {}}}\n      rate_window: 3s\n      extra_labels: {{model: model}}\nmetrics:\n  - {{name: tokens_per_second, source: llm, measure: rate, inference: {{family: \"vllm:generation_tokens_total\"}}}}\n  - {{name: queue_seconds, source: triton, measure: queue_time_seconds, inference: {{match: {{model: densenet_onnx}}}}}}\n",
        stub.kubeconfig().display(),
        triton.port
    );
    let adapter = Adapter::start(&config).await;

    let rate = || async { value(&adapter, "ml", "tokens_per_second", "workload=llm").await };
    eventually("a rate near 50/s", || async {
        rate().await.filter(|v| (40.0..=60.0).contains(v))
    })
    .await;
    // Mean queue time per request: 2 ms, from the two counters' increases.
    eventually("a queue time of 2 ms", || async {
        value(
            &adapter,
            "ml",
            "queue_seconds",
            "workload=triton,model=densenet_onnx",
        )
        .await
        .filter(|v| (v - 0.002).abs() < 1e-4)
    })
    .await;

    // The server restarts: its counter starts again from 0. The rate never goes negative or
    // spikes, and settles at the true rate again.
    *started.lock().expect("lock") = Instant::now();
    let until = Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while Instant::now() < until {
        if let Some(v) = rate().await {
            seen.push(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.iter().all(|v| (0.0..=65.0).contains(v)),
        "rates across the reset: {seen:?}"
    );
    assert!(
        seen.last().is_some_and(|v| (40.0..=60.0).contains(v)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn https_pods_are_read_with_the_configured_ca_and_refused_without_it() {
    let stub = KubeStub::start().await;
    let ca = common::pki::ca("model-servers");
    let (cert, key) = common::pki::leaf(&ca, &["127.0.0.1"]);
    let server = ModelServer::start_tls(&vllm_old(6.0, 0.5), &cert, &key).await;
    let sts = ("StatefulSet", "apps/v1", "llm");
    stub.apply("pods", pod("ml", "llm-0", sts, labels(), server.port, true));
    let dir = std::env::temp_dir().join(format!("qma-inference-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca file");
    let metrics = "  - {name: vllm_waiting, source: llm, measure: waiting_requests}\n";
    let with_ca = format!(
        "      preset: vllm\n      pods: {{selector: \"server=vllm\", port: http, scheme: https}}\n      ca_file: {}\n",
        ca_file.display()
    );
    let adapter = Adapter::start(&config(&stub, "100ms", &with_ca, metrics)).await;
    until(&adapter, "ml", "vllm_waiting", "workload=llm", 6.0).await;
    adapter.stop().await;

    // Without the CA the certificate is not trusted: the pod is unreadable, never 0.
    let without =
        "      preset: vllm\n      pods: {selector: \"server=vllm\", port: http, scheme: https}\n";
    let adapter = Adapter::start(&config(&stub, "100ms", without, metrics)).await;
    adapter.polls(2).await;
    let message = until_unavailable(&adapter, "ml", "vllm_waiting", "workload=llm").await;
    assert!(message.contains("model-server pod"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn server_queues_through_prometheus() {
    let stub = KubeStub::start().await;
    let a = ModelServer::start(&vllm_new([5.0, 1.0], [0.5, 0.9])).await;
    let b = ModelServer::start(&vllm_old(3.0, 0.3)).await;
    let rs = ("ReplicaSet", "apps/v1", "chat-7f");
    stub.apply(
        "replicasets",
        replicaset("inference", "chat-7f", Some("chat")),
    );
    stub.apply(
        "pods",
        pod("inference", "chat-7f-a", rs, labels(), a.port, true),
    );
    stub.apply(
        "pods",
        pod("inference", "chat-7f-b", rs, labels(), b.port, true),
    );
    // One target per pod with the labels a PodMonitor gives it.
    let job = |port: u16, pod: &str| {
        format!(
            "      - targets: [\"127.0.0.1:{port}\"]\n        labels: {{namespace: inference, pod: {pod}}}\n"
        )
    };
    let mut prometheus = Prometheus::start(&format!(
        "  - job_name: vllm\n    static_configs:\n{}{}",
        job(a.port, "chat-7f-a"),
        job(b.port, "chat-7f-b")
    ))
    .await;
    let source = format!(
        "      preset: vllm\n      prometheus: {{url: \"{}\", matchers: 'job=\"vllm\"'}}\n",
        prometheus.url
    );
    let metrics = "  - {name: vllm_waiting, source: llm, measure: waiting_requests}\n  - {name: vllm_waiting_max, source: llm, measure: waiting_requests, inference: {workload: max}}\n  - {name: vllm_kv_usage, source: llm, measure: kv_cache_usage_ratio}\n";
    let adapter = Adapter::start(&config(&stub, "300ms", &source, metrics)).await;

    until(&adapter, "inference", "vllm_waiting", "workload=chat", 9.0).await;
    until(&adapter, "inference", "vllm_kv_usage", "workload=chat", 0.6).await;
    a.set(&vllm_new([10.0, 1.0], [0.5, 0.9]));
    until(&adapter, "inference", "vllm_waiting", "workload=chat", 14.0).await;

    // Prometheus reports pod b down: an unknown member, as a failed direct scrape.
    b.status(500);
    until_unavailable(&adapter, "inference", "vllm_waiting", "workload=chat").await;
    assert_eq!(
        value(&adapter, "inference", "vllm_waiting_max", "workload=chat").await,
        Some(11.0)
    );
    // Prometheus itself down: the source is down.
    prometheus.kill();
    let message =
        until_unavailable(&adapter, "inference", "vllm_waiting_max", "workload=chat").await;
    assert!(!message.is_empty());
}
