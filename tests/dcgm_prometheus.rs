//! The dcgm source's Prometheus mode against a real Prometheus (Debian's, installed by
//! `make test`; run here as a private process on a free port) that scrapes two dcgm-exporter
//! stand-ins: one instant query per poll, relayed labels understood, a target Prometheus reports
//! down makes only its GPUs unknown, Prometheus down is a 503, and a sample Prometheus last
//! saw long ago is stale, not fresh. Pods come from the Kubernetes API stub.

mod common;

use common::Adapter;
use common::gpu::{
    Exporter, NODE_A, NODE_B, by_workload, close, eventually, get, llm_infer_on, populate,
    until_unavailable,
};
use common::kube_stub::KubeStub;
use common::prometheus::Prometheus;

/// A scrape job for the exporters on `ports`. The target labels pod/namespace clash with the
/// exporter's own, as with a ServiceMonitor: Prometheus renames the exporter's to
/// exported_pod/exported_namespace.
fn dcgm_job(ports: &[u16]) -> String {
    let targets: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "  - job_name: dcgm\n    static_configs:\n      - targets: [{}]\n        labels: {{namespace: gpu-operator, pod: dcgm-exporter-x}}\n",
        targets.join(", ")
    )
}

#[tokio::test]
async fn gpu_utilization_per_workload_through_prometheus() {
    let stub = KubeStub::start().await;
    populate(&stub);
    let a = Exporter::start(NODE_A).await;
    // Prometheus refuses a whole scrape over one malformed line (our reader skips it); the
    // Prometheus path gets node B without it.
    let b = Exporter::start(&NODE_B.replace("this line is not exposition format\n", "")).await;
    let mut prometheus = Prometheus::start(&dcgm_job(&[a.port, b.port])).await;
    let config = format!(
        "poll_interval: 300ms\npoll_timeout: 3s\nkubernetes: {{kubeconfig: {}}}\nsources:\n  gpus:\n    dcgm:\n      prometheus: {{url: \"{}\", matchers: 'job=\"dcgm\"'}}\n      extra_labels: {{model_name: modelName}}\nmetrics:\n  - {{name: gpu_utilization, source: gpus, measure: gpu_utilization}}\n  - {{name: gpus_held, source: gpus, measure: gpu_utilization, dcgm: {{aggregate: gpus}}}}\n",
        stub.kubeconfig().display(),
        prometheus.url
    );
    let adapter = Adapter::start(&config).await;

    // Prometheus needs a scrape or two before both targets are in.
    let body = eventually("both exporters through Prometheus", || async {
        let (status, body) = get(&adapter, "inference", "gpu_utilization", "").await;
        (status == 200 && by_workload(&body).len() == 3).then_some(body)
    })
    .await;
    let values = by_workload(&body);
    assert!(
        values.contains(&("vllm".into(), "StatefulSet".into(), 50.0)),
        "{values:?}"
    );
    let (_, body) = get(
        &adapter,
        "inference",
        "gpu_utilization",
        &llm_infer_on("NVIDIA L4"),
    )
    .await;
    assert_eq!(
        by_workload(&body),
        vec![("llm-infer".into(), "Deployment".into(), 70.0)]
    );
    let (_, body) = get(&adapter, "batch", "gpu_utilization", "").await;
    let values = by_workload(&body);
    assert_eq!(
        values.len(),
        1,
        "the exporter's own pod (target label) is not a workload: {body}"
    );
    assert!(close(values[0].2, 81.235), "{values:?}");

    // Node B's exporter fails: Prometheus reports it down, only its GPUs become unknown.
    b.set(None);
    let message =
        until_unavailable(&adapter, "inference", "gpu_utilization", "workload=vllm").await;
    assert!(message.contains("none of the 1 pod(s)"), "{message}");
    let (status, _) = get(&adapter, "batch", "gpu_utilization", "").await;
    assert_eq!(status, 200, "node A still serves");

    // Prometheus itself goes away: the source is down.
    prometheus.kill();
    let message = until_unavailable(&adapter, "batch", "gpu_utilization", "").await;
    assert!(message.contains("Prometheus"), "{message}");
    adapter.stop().await;
}

#[tokio::test]
async fn a_sample_prometheus_last_saw_long_ago_ages_out_instead_of_passing_as_fresh() {
    let stub = KubeStub::start().await;
    populate(&stub);
    let a = Exporter::start(NODE_A).await;
    // Node B's exporter writes its own sample times, two minutes old: Prometheus keeps them
    // (honor_timestamps) and an instant query still answers them, inside its 5-minute lookback.
    let two_minutes_ago_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        - 120_000;
    let node_b = NODE_B
        .replace("this line is not exposition format\n", "")
        .replace(
            "pod=\"vllm-0\"} 0.5",
            &format!("pod=\"vllm-0\"}} 0.5 {two_minutes_ago_ms}"),
        );
    let b = Exporter::start(&node_b).await;
    let prometheus = Prometheus::start(&dcgm_job(&[a.port, b.port])).await;
    let config = format!(
        "poll_interval: 300ms\npoll_timeout: 3s\nmax_staleness: 30s\nkubernetes: {{kubeconfig: {}}}\nsources:\n  gpus:\n    dcgm:\n      prometheus: {{url: \"{}\", matchers: 'job=\"dcgm\"'}}\nmetrics:\n  - {{name: gpu_utilization, source: gpus, measure: gpu_utilization}}\n",
        stub.kubeconfig().display(),
        prometheus.url
    );
    let adapter = Adapter::start(&config).await;
    // Node A's fresh samples are served; the workload read from node B's old sample is stale.
    eventually("node A through Prometheus", || async {
        let (status, _) = get(&adapter, "batch", "gpu_utilization", "").await;
        (status == 200).then_some(())
    })
    .await;
    let message =
        until_unavailable(&adapter, "inference", "gpu_utilization", "workload=vllm").await;
    assert!(
        message.contains("older than max_staleness"),
        "the 2-minute-old sample is refused as stale: {message}"
    );
    adapter.stop().await;
}
