//! GPU test helpers: dcgm-exporter stand-ins serving fixture payloads over HTTP, the cluster
//! their pods live in (for the Kubernetes API stub), and reading per-workload values back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::kube_stub::{KubeStub, pod, replicaset};
use super::{Adapter, quantity};

/// A node with a whole allocated GPU, a MIG GPU (one instance allocated) and an idle GPU.
pub const NODE_A: &str = include_str!("../fixtures/synthetic-4.8-k8s-mig.prom");

/// A second node, written for these tests: another llm-infer pod with two whole GPUs (60 % and
/// 80 % busy: the pod is 70 %), a StatefulSet pod, and a pod the cluster does not know yet.
pub const NODE_B: &str = r#"# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.
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
pub struct Exporter {
    pub url: String,
    pub port: u16,
    body: Arc<Mutex<Option<String>>>,
}

impl Exporter {
    pub async fn start(body: &str) -> Exporter {
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

    pub fn set(&self, body: Option<&str>) {
        *self.body.lock().expect("lock") = body.map(str::to_string);
    }
}

/// The cluster both nodes' pods live in.
pub fn populate(stub: &KubeStub) {
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

/// The selector of llm-infer's series on GPU model `model` (as the exporter names it: the
/// adapter serves it encoded, `NVIDIA L4` has a space).
pub fn llm_infer_on(model: &str) -> String {
    format!(
        "workload=llm-infer,model_name={}",
        queue_metrics_adapter::apimachinery::label::encode_value(model)
    )
}

/// GET a metric in `namespace`; returns status and body.
pub async fn get(adapter: &Adapter, namespace: &str, metric: &str, selector: &str) -> (u16, Value) {
    let selector = selector.replace('=', "%3D").replace(',', "%2C");
    adapter
        .get_json(&format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector={selector}"
        ))
        .await
}

/// Values by workload name in a 200 response.
pub fn by_workload(body: &Value) -> Vec<(String, String, f64)> {
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
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
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

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.001
}

/// Waits until the metric answers 503 (bounded: 15 s) and returns the Status message.
pub async fn until_unavailable(
    adapter: &Adapter,
    namespace: &str,
    metric: &str,
    selector: &str,
) -> String {
    let body = eventually(
        &format!("{metric} in {namespace} to answer 503"),
        || async {
            let (status, body) = get(adapter, namespace, metric, selector).await;
            (status == 503).then_some(body)
        },
    )
    .await;
    body["message"].as_str().unwrap_or_default().to_string()
}
