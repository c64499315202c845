//! End to end for GPU metrics: dcgm-exporter payloads served over HTTP -> adapter (scrape,
//! parse, owner resolution through the Kubernetes API stub, aggregation) -> external metrics
//! API values per workload. No real API server runs here: pods, ReplicaSets and EndpointSlices
//! come from `common::kube_stub` through a kubeconfig, the way the adapter reads a cluster.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kube_stub::{KubeStub, endpoint_slice, pod, replicaset};
use common::{Adapter, quantity};
use serde_json::Value;

const NODE_A: &str = include_str!("fixtures/synthetic-4.8-k8s-mig.prom");

/// A second node, written for these tests: another llm-infer pod with two whole GPUs (60 % and
/// 80 % busy: the pod is 70 %), a StatefulSet pod, and a pod the cluster does not know yet.
const NODE_B: &str = r#"# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.
# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge
DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-b0",modelName="NVIDIA L4",Hostname="gpu-node-b",container="triton",namespace="inference",pod="llm-infer-5c7b9d8f4-zz9kk"} 0.6
DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="1",UUID="GPU-b1",modelName="NVIDIA L4",Hostname="gpu-node-b",container="triton",namespace="inference",pod="llm-infer-5c7b9d8f4-zz9kk"} 0.8
DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="2",UUID="GPU-b2",modelName="NVIDIA L4",Hostname="gpu-node-b",container="vllm",namespace="inference",pod="vllm-0"} 0.5
DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="3",UUID="GPU-b3",modelName="NVIDIA L4",Hostname="gpu-node-b",container="x",namespace="inference",pod="fresh-pod"} 0.9
this line is not exposition format
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-b0",modelName="NVIDIA L4",Hostname="gpu-node-b",namespace="inference",pod="llm-infer-5c7b9d8f4-zz9kk"} 60
DCGM_FI_DEV_POWER_USAGE{gpu="1",UUID="GPU-b1",modelName="NVIDIA L4",Hostname="gpu-node-b",namespace="inference",pod="llm-infer-5c7b9d8f4-zz9kk"} 70
"#;

/// A dcgm-exporter stand-in whose payload a test can change or break (`None` answers 500).
struct Exporter {
    url: String,
    port: u16,
    body: Arc<Mutex<Option<String>>>,
}

impl Exporter {
    async fn start(body: &str) -> Exporter {
        let shared = Arc::new(Mutex::new(Some(body.to_string())));
        let state = shared.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    match state.lock().expect("lock").clone() {
                        Some(b) => (axum::http::StatusCode::OK, b),
                        None => (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            "exporter broken".to_string(),
                        ),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Exporter {
            url: format!("http://127.0.0.1:{port}/metrics"),
            port,
            body: shared,
        }
    }

    fn set(&self, body: Option<&str>) {
        *self.body.lock().expect("lock") = body.map(str::to_string);
    }
}

/// The cluster both nodes' pods live in.
fn populate(stub: &KubeStub) {
    stub.apply(
        "replicasets",
        replicaset("batch", "embed-worker-7d9f8c6b5", Some("embed-worker")),
    );
    stub.apply(
        "pods",
        pod(
            "batch",
            "embed-worker-7d9f8c6b5-x2k4q",
            Some(("ReplicaSet", "apps/v1", "embed-worker-7d9f8c6b5")),
        ),
    );
    stub.apply(
        "replicasets",
        replicaset("inference", "llm-infer-5c7b9d8f4", Some("llm-infer")),
    );
    for name in ["llm-infer-5c7b9d8f4-q8w2e", "llm-infer-5c7b9d8f4-zz9kk"] {
        stub.apply(
            "pods",
            pod(
                "inference",
                name,
                Some(("ReplicaSet", "apps/v1", "llm-infer-5c7b9d8f4")),
            ),
        );
    }
    stub.apply(
        "pods",
        pod(
            "inference",
            "vllm-0",
            Some(("StatefulSet", "apps/v1", "vllm")),
        ),
    );
}

fn config(stub: &KubeStub, endpoints: &str) -> String {
    format!(
        r#"
poll_interval: 100ms
poll_timeout: 2s
kubernetes:
  kubeconfig: {kubeconfig}
sources:
  gpus:
    dcgm:
      {endpoints}
      scrape_timeout: 1s
      extra_labels:
        model_name: modelName
metrics:
  - name: gpu_utilization
    source: gpus
    measure: gpu_utilization
  - name: gpu_utilization_max
    source: gpus
    measure: gpu_utilization
    dcgm: {{aggregate: max}}
  - name: gpus_held
    source: gpus
    measure: gpu_utilization
    dcgm: {{aggregate: gpus}}
  - name: gpu_power_sum
    source: gpus
    measure: power_watts
    dcgm: {{aggregate: sum}}
  - name: gpu_memory_used
    source: gpus
    measure: memory_used_ratio
"#,
        kubeconfig = stub.kubeconfig().display()
    )
}

/// GET a metric in `namespace`; returns status and body.
async fn get(adapter: &Adapter, namespace: &str, metric: &str, selector: &str) -> (u16, Value) {
    let selector = selector.replace('=', "%3D").replace(',', "%2C");
    adapter
        .get_json(&format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector={selector}"
        ))
        .await
}

/// Values by workload name in a 200 response.
fn by_workload(body: &Value) -> Vec<(String, String, f64)> {
    let mut v: Vec<(String, String, f64)> = body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {body}"))
        .iter()
        .map(|i| {
            (
                i["metricLabels"]["workload"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                i["metricLabels"]["workload_kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                quantity(i["value"].as_str().expect("value")),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Retries `check` until it returns `Some` (bounded: 15 s).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.001
}

#[tokio::test]
async fn gpu_utilization_per_workload_from_two_nodes() {
    let stub = KubeStub::start().await;
    populate(&stub);
    let a = Exporter::start(NODE_A).await;
    let b = Exporter::start(NODE_B).await;
    let adapter = Adapter::start(&config(
        &stub,
        &format!("endpoints: [{}, {}]", a.url, b.url),
    ))
    .await;
    adapter.ready().await;

    // Mean per pod first, then per workload: llm-infer = (43.321 + (60 + 80) / 2) / 2.
    let (status, body) = get(&adapter, "inference", "gpu_utilization", "").await;
    assert_eq!(status, 200, "{body}");
    let values = by_workload(&body);
    assert_eq!(
        values.len(),
        3,
        "llm-infer has two GPU models, vllm one: {body}"
    );
    let llm: Vec<&(String, String, f64)> = values.iter().filter(|v| v.0 == "llm-infer").collect();
    assert_eq!(llm.len(), 2, "one series per GPU model: {body}");
    let (status, body) = get(
        &adapter,
        "inference",
        "gpu_utilization",
        "workload=llm-infer,model_name=NVIDIA-L4",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        by_workload(&body),
        vec![("llm-infer".into(), "Deployment".into(), 70.0)]
    );
    assert_eq!(body["items"][0]["metricLabels"]["namespace"], "inference");
    let (_, body) = get(&adapter, "inference", "gpu_utilization", "workload=vllm").await;
    assert_eq!(
        by_workload(&body),
        vec![("vllm".into(), "StatefulSet".into(), 50.0)]
    );

    // The fresh pod is not in the cluster yet: left out, not guessed.
    let (_, body) = get(&adapter, "inference", "gpus_held", "workload=fresh-pod").await;
    assert_eq!(body["items"], serde_json::json!([]), "{body}");

    // Namespaces see only their own workloads.
    let (_, body) = get(&adapter, "batch", "gpu_utilization", "").await;
    let values = by_workload(&body);
    assert_eq!(values.len(), 1, "{body}");
    assert_eq!(values[0].0, "embed-worker");
    assert!(
        close(values[0].2, 81.235),
        "engine activity in percent: {values:?}"
    );
    let (_, body) = get(&adapter, "batch", "gpu_utilization", "workload=llm-infer").await;
    assert_eq!(
        body["items"],
        serde_json::json!([]),
        "another namespace's workload: {body}"
    );

    // Other aggregates and signals, without the model split.
    let (_, body) = get(
        &adapter,
        "inference",
        "gpus_held",
        "workload=llm-infer,model_name=NVIDIA-L4",
    )
    .await;
    assert_eq!(by_workload(&body)[0].2, 2.0);
    let (_, body) = get(
        &adapter,
        "inference",
        "gpu_power_sum",
        "workload=llm-infer,model_name=NVIDIA-L4",
    )
    .await;
    assert_eq!(by_workload(&body)[0].2, 130.0);
    let (status, body) = get(
        &adapter,
        "inference",
        "gpu_memory_used",
        "workload=llm-infer,model_name=NVIDIA-L4",
    )
    .await;
    assert_eq!(
        status, 503,
        "node B reports no frame buffer: unknown, never 0: {body}"
    );
    let (_, body) = get(&adapter, "batch", "gpu_memory_used", "").await;
    assert!(
        close(by_workload(&body)[0].2, 23456.0 / (23456.0 + 57625.0)),
        "{body}"
    );

    // The pod appears in the cluster: resolved on a later poll.
    stub.apply("pods", pod("inference", "fresh-pod", None));
    let body = eventually("the fresh pod to resolve", || async {
        let (_, body) = get(
            &adapter,
            "inference",
            "gpu_utilization",
            "workload=fresh-pod",
        )
        .await;
        (!body["items"].as_array()?.is_empty()).then_some(body)
    })
    .await;
    assert_eq!(
        by_workload(&body),
        vec![("fresh-pod".into(), "Pod".into(), 90.0)]
    );

    // Node B's exporter breaks: only its GPUs become unknown.
    b.set(None);
    let body = eventually("node B's GPUs to become unknown", || async {
        let (status, body) = get(&adapter, "inference", "gpu_utilization", "workload=vllm").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("none of the 1 pod(s) reported"),
        "{body}"
    );
    let (status, body) = get(&adapter, "batch", "gpu_utilization", "").await;
    assert_eq!(status, 200, "node A still serves: {body}");
    let (status, body) = get(
        &adapter,
        "inference",
        "gpu_utilization",
        "workload=llm-infer,model_name=NVIDIA-H100-80GB-HBM3",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(close(by_workload(&body)[0].2, 43.321));
    let (status, _) = get(
        &adapter,
        "inference",
        "gpu_power_sum",
        "workload=llm-infer,model_name=NVIDIA-L4",
    )
    .await;
    assert_eq!(status, 503, "a sum with unknown members is unknown");

    // Both break: the source is down, every metric answers 503.
    a.set(None);
    let body = eventually("the source to fail", || async {
        let (status, body) = get(&adapter, "batch", "gpu_utilization", "").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dcgm-exporter endpoint"),
        "{body}"
    );

    // And recover.
    a.set(Some(NODE_A));
    b.set(Some(NODE_B));
    eventually("recovery", || async {
        let (status, _) = get(&adapter, "inference", "gpu_utilization", "workload=vllm").await;
        (status == 200).then_some(())
    })
    .await;

    let requests = stub.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods?")
                && r.contains("as=PartialObjectMetadataList")),
        "pods are listed as metadata only: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("watch=true")),
        "{requests:?}"
    );
    adapter.stop().await;
}

/// GPUs held by llm-infer, over its GPU models.
async fn gpus_of_llm_infer(adapter: &Adapter) -> f64 {
    let (status, body) = get(adapter, "inference", "gpus_held", "workload=llm-infer").await;
    assert_eq!(status, 200, "{body}");
    by_workload(&body).iter().map(|v| v.2).sum::<f64>()
}

#[tokio::test]
async fn endpoints_follow_the_exporter_service() {
    let stub = KubeStub::start().await;
    populate(&stub);
    let a = Exporter::start(NODE_A).await;
    let b = Exporter::start(NODE_B).await;
    stub.apply(
        "endpointslices",
        endpoint_slice(
            "gpu-operator",
            "dcgm-a",
            "dcgm-exporter",
            "metrics",
            a.port,
            &["127.0.0.1"],
        ),
    );
    // Another Service's slice in the same namespace is not ours.
    stub.apply(
        "endpointslices",
        endpoint_slice(
            "gpu-operator",
            "other",
            "something-else",
            "metrics",
            b.port,
            &["127.0.0.1"],
        ),
    );
    let adapter = Adapter::start(&config(
        &stub,
        "discover: {namespace: gpu-operator, service: dcgm-exporter, port: metrics}",
    ))
    .await;
    adapter.ready().await;
    assert_eq!(
        gpus_of_llm_infer(&adapter).await,
        1.0,
        "node A only: one MIG instance"
    );

    // The DaemonSet lands on node B: a second slice appears.
    stub.apply(
        "endpointslices",
        endpoint_slice(
            "gpu-operator",
            "dcgm-b",
            "dcgm-exporter",
            "metrics",
            b.port,
            &["127.0.0.1"],
        ),
    );
    eventually("node B to be scraped", || async {
        (gpus_of_llm_infer(&adapter).await == 3.0).then_some(())
    })
    .await;

    // And leaves it.
    stub.delete("endpointslices", "gpu-operator", "dcgm-b");
    eventually("node B to be dropped", || async {
        (gpus_of_llm_infer(&adapter).await == 1.0).then_some(())
    })
    .await;

    // No ready endpoint at all: an error, not an empty answer.
    stub.delete("endpointslices", "gpu-operator", "dcgm-a");
    let body = eventually("no endpoints", || async {
        let (status, body) = get(&adapter, "inference", "gpus_held", "").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no ready endpoint"),
        "{body}"
    );
    adapter.stop().await;
}

#[tokio::test]
async fn an_unreadable_kubeconfig_stops_start_up_with_its_name() {
    let yaml = "kubernetes: {kubeconfig: /nonexistent/qma-kubeconfig}\nsources:\n  gpus:\n    dcgm: {endpoints: [\"http://127.0.0.1:1/metrics\"]}\nmetrics:\n  - {name: g, source: gpus, measure: gpu_utilization}\n";
    let config =
        queue_metrics_adapter::config::Config::from_yaml(yaml, std::path::Path::new("t.yaml"))
            .expect("valid config");
    let settings = queue_metrics_adapter::app::Settings::local();
    match queue_metrics_adapter::app::start(config, settings).await {
        Ok(_) => panic!("started without a readable kubeconfig"),
        Err(e) => {
            let text = format!("{e:#}");
            assert!(
                text.contains("kubernetes.kubeconfig /nonexistent/qma-kubeconfig"),
                "{text}"
            );
        }
    }
}
