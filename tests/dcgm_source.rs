//! End to end for GPU metrics: dcgm-exporter payloads served over HTTP -> adapter (scrape,
//! parse, owner resolution through the Kubernetes API stub, aggregation) -> external metrics
//! API values per workload. No real API server runs here: pods, ReplicaSets and EndpointSlices
//! come from `common::kube_stub` through a kubeconfig, the way the adapter reads a cluster.

mod common;

use common::Adapter;
use common::gpu::{
    Exporter, NODE_A, NODE_B, by_workload, close, eventually, get, llm_infer_on, populate,
    until_unavailable,
};
use common::kube_stub::{KubeStub, endpoint_slice, pod};

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
        &llm_infer_on("NVIDIA L4"),
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
        &llm_infer_on("NVIDIA L4"),
    )
    .await;
    assert_eq!(by_workload(&body)[0].2, 2.0);
    let (_, body) = get(
        &adapter,
        "inference",
        "gpu_power_sum",
        &llm_infer_on("NVIDIA L4"),
    )
    .await;
    assert_eq!(by_workload(&body)[0].2, 130.0);
    let (status, body) = get(
        &adapter,
        "inference",
        "gpu_memory_used",
        &llm_infer_on("NVIDIA L4"),
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
    let message =
        until_unavailable(&adapter, "inference", "gpu_utilization", "workload=vllm").await;
    assert!(
        message.contains("none of the 1 pod(s) reported"),
        "{message}"
    );
    let (status, body) = get(&adapter, "batch", "gpu_utilization", "").await;
    assert_eq!(status, 200, "node A still serves: {body}");
    let (status, body) = get(
        &adapter,
        "inference",
        "gpu_utilization",
        &llm_infer_on("NVIDIA H100 80GB HBM3"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(close(by_workload(&body)[0].2, 43.321));
    let (status, _) = get(
        &adapter,
        "inference",
        "gpu_power_sum",
        &llm_infer_on("NVIDIA L4"),
    )
    .await;
    assert_eq!(status, 503, "a sum with unknown members is unknown");

    // Both break: the source is down, every metric answers 503.
    a.set(None);
    let message = until_unavailable(&adapter, "batch", "gpu_utilization", "").await;
    assert!(message.contains("dcgm-exporter endpoint"), "{message}");

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
    let message = until_unavailable(&adapter, "inference", "gpus_held", "").await;
    assert!(message.contains("no ready endpoint"), "{message}");
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
