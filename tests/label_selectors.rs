//! Every served series can be picked out by a selector made of its own labels (issue 30.2),
//! for each kind against its real server or stand-in: Redis (list, stream, sorted set, a
//! pattern over keys with `:`, `/`, spaces, non-ASCII and more than 63 characters), RabbitMQ
//! (queue names and a vhost with `/`, spaces, `:` and more than 63 characters) and dcgm (GPU
//! model names with spaces and `:`/`/`, a workload name longer than 63 characters).
//!
//! A label value taken from data as it is (`key=qma-test:...:queue:emb`) is refused by every
//! selector (`must consist of alphanumerics...`): the series could never be scaled on alone.

mod common;

use std::time::Duration;

use common::gpu::{Exporter, NODE_A, NODE_B, eventually, populate};
use common::kube_stub::{KubeStub, pod};
use common::rabbit::{MANAGEMENT, TestVhost, set_guest_password_env};
use common::{Adapter, Cleanup, cmd, connect, prefix, redis_url, server_now_ms};
use queue_metrics_adapter::apimachinery::label::{validate_key, validate_value};
use serde_json::Value;

/// How long the broker's statistics may take to show a queue.
const STATS: Duration = Duration::from_secs(30);

/// Every series of `metric` in `namespace` (200, `series` of them); each one's labels are valid
/// Kubernetes labels, and a selector made of them answers exactly that series.
async fn each_series_is_selectable(a: &Adapter, namespace: &str, metric: &str, series: usize) {
    let url = format!(
        "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
        a.base
    );
    let get = |selector: Option<String>| {
        let query = selector
            .map(|s| {
                let s: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
                format!("?labelSelector={s}")
            })
            .unwrap_or_default();
        let request = a.http.get(format!("{url}{query}"));
        async move {
            let r = request.send().await.expect("request");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("JSON");
            (status, body)
        }
    };
    let (status, all) = get(None).await;
    assert_eq!(status, 200, "{metric}: {all}");
    let items = all["items"].as_array().expect("items");
    assert_eq!(items.len(), series, "{metric}: {all}");
    for item in items {
        let labels = item["metricLabels"].as_object().expect("metricLabels");
        let terms: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().expect("a string value")))
            .collect();
        let selector = terms.join(",");
        let (status, body) = get(Some(selector.clone())).await;
        assert_eq!(
            status, 200,
            "{metric} with labelSelector={selector}: {body}"
        );
        let got = body["items"].as_array().expect("items");
        assert_eq!(
            got.len(),
            1,
            "{metric} with labelSelector={selector}: exactly its own series, got {body}"
        );
        assert_eq!(got[0]["metricLabels"], item["metricLabels"], "{selector}");
        // Which the API's 200 implies (it checks a selector by the same rules), said directly.
        for (k, v) in labels {
            let v = v.as_str().unwrap_or_default();
            validate_key(k).unwrap_or_else(|e| panic!("{metric}: label key {k:?} {e}"));
            validate_value(v).unwrap_or_else(|e| panic!("{metric}: value {v:?} of {k:?} {e}"));
        }
    }
}

#[tokio::test]
async fn every_redis_series_is_selectable_by_its_own_labels() {
    // The prefix itself has colons: `qma-test:labels:<pid>-<n>:`.
    let p = prefix("labels");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let list = format!("{p}queue:emb");
    cmd::<i64>(&mut c, &["LPUSH", &list, "a", "b"]).await;
    // Pattern keys: two that differ only in a character a label value cannot hold, a space,
    // non-ASCII, two too long for a label value that share their first 70 characters, a plain one.
    let long = format!(
        "embedding-jobs-for-the-multilingual-retrieval-pipeline:{}",
        "x".repeat(20)
    );
    let parts = [
        "a:b".to_string(),
        "a/b".into(),
        "with space".into(),
        "日本".into(),
        format!("{long}1"),
        format!("{long}2"),
        "plain".into(),
    ];
    for part in &parts {
        cmd::<i64>(&mut c, &["LPUSH", &format!("{p}pq:{part}"), "job"]).await;
    }
    let stream = format!("{p}stream:emb");
    for i in 0..3 {
        let _: String = cmd(&mut c, &["XADD", &stream, "*", "doc", &i.to_string()]).await;
    }
    let _: () = cmd(&mut c, &["XGROUP", "CREATE", &stream, "workers", "0"]).await;
    let zset = format!("{p}delayed:emb");
    let now_s = server_now_ms(&mut c).await / 1000;
    for (member, offset) in [("due", -5), ("later", 600)] {
        cmd::<i64>(
            &mut c,
            &["ZADD", &zset, &(now_s + offset).to_string(), member],
        )
        .await;
    }
    let metric = |name: &str, measure: &str, target: &str| {
        format!(
            "  - {{name: {name}, source: jobs, measure: {measure}, labels: {{team: ml}}, redis: {{{target}}}}}\n"
        )
    };
    let metrics = [
        metric(
            "list-len",
            "length",
            &format!("type: list, key: \"{list}\""),
        ),
        metric(
            "pattern-len",
            "length",
            &format!("type: list, pattern: \"{p}pq:*\""),
        ),
        metric(
            "stream-len",
            "length",
            &format!("type: stream, key: \"{stream}\", group: workers"),
        ),
        metric(
            "stream-lag",
            "lag",
            &format!("type: stream, key: \"{stream}\", group: workers"),
        ),
        metric(
            "stream-pending",
            "pending",
            &format!("type: stream, key: \"{stream}\", group: workers"),
        ),
        metric(
            "zset-len",
            "length",
            &format!("type: zset, key: \"{zset}\", score_unit: s"),
        ),
        metric(
            "zset-ready",
            "ready",
            &format!("type: zset, key: \"{zset}\", score_unit: s"),
        ),
    ]
    .concat();
    let a = Adapter::start(&format!(
        "poll_interval: 200ms\ndiscovery_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n{metrics}",
        redis_url()
    ))
    .await;
    a.polls(1).await;
    for (name, series) in [
        ("list-len", 1),
        ("pattern-len", parts.len()),
        ("stream-len", 1),
        ("stream-lag", 1),
        ("stream-pending", 1),
        ("zset-len", 1),
        ("zset-ready", 1),
    ] {
        each_series_is_selectable(&a, "default", name, series).await;
    }
    a.stop().await;
}

#[tokio::test]
async fn every_rabbitmq_series_is_selectable_by_its_own_labels() {
    set_guest_password_env();
    let n = prefix("labels").replace(':', "-");
    let vh = TestVhost::named(format!("{}/jobs: a vhost", n.trim_end_matches('-'))).await;
    let conn = vh.connect().await;
    let long = format!(
        "embedding-jobs-for-the-multilingual-retrieval-pipeline.{}",
        "x".repeat(20)
    );
    let queues = [
        "jobs/emb".to_string(),
        "jobs emb".into(),
        "jobs:emb".into(),
        format!("{long}1"),
        format!("{long}2"),
        "plain".into(),
    ];
    for q in &queues {
        vh.publish(&conn, q, "classic", &[("job", None)]).await;
    }
    let metrics = [
        ("ready", "ready"),
        ("total", "total"),
        ("unacked", "unacked"),
        ("consumers", "consumers"),
    ];
    let targets: Vec<(&str, &str, &str)> = metrics
        .iter()
        .map(|(name, measure)| (*name, *measure, "queue_pattern: \".*\""))
        .collect();
    let a = Adapter::start(&common::rabbit::config(MANAGEMENT, &vh.name, &targets)).await;
    // Until the broker's statistics show every queue with its message.
    a.wait_for("ready", None, STATS, |status, body| {
        status == 200
            && body["items"].as_array().is_some_and(|items| {
                items.len() == queues.len() && items.iter().all(|i| i["value"] == "1")
            })
    })
    .await;
    for (name, _) in metrics {
        // Each column may show up a statistics interval after `ready` (consumers lag).
        a.wait_for(name, None, STATS, |status, body| {
            status == 200
                && body["items"]
                    .as_array()
                    .is_some_and(|items| items.len() == queues.len())
        })
        .await;
        each_series_is_selectable(&a, "default", name, queues.len()).await;
    }
    a.stop().await;
}

/// A third dcgm-exporter: one pod of a StatefulSet whose name is longer than a label value may
/// be, on two GPUs whose model names differ only in `:` and `/`.
fn node_c(pod: &str) -> String {
    format!(
        r#"# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge
DCGM_FI_PROF_GR_ENGINE_ACTIVE{{gpu="0",UUID="GPU-c0",modelName="GPU a:b",Hostname="gpu-node-c",container="x",namespace="inference",pod="{pod}"}} 0.3
DCGM_FI_PROF_GR_ENGINE_ACTIVE{{gpu="1",UUID="GPU-c1",modelName="GPU a/b",Hostname="gpu-node-c",container="x",namespace="inference",pod="{pod}"}} 0.4
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{{gpu="0",UUID="GPU-c0",modelName="GPU a:b",Hostname="gpu-node-c",namespace="inference",pod="{pod}"}} 50
DCGM_FI_DEV_POWER_USAGE{{gpu="1",UUID="GPU-c1",modelName="GPU a/b",Hostname="gpu-node-c",namespace="inference",pod="{pod}"}} 55
"#
    )
}

#[tokio::test]
async fn every_dcgm_series_is_selectable_by_its_own_labels() {
    let stub = KubeStub::start().await;
    populate(&stub);
    // 77 characters: a valid StatefulSet name (a DNS subdomain), too long for a label value.
    let sts = "embedding-service-for-the-multilingual-retrieval-pipeline-in-production-europe";
    let pod_name = format!("{sts}-0");
    stub.apply(
        "pods",
        pod(
            "inference",
            &pod_name,
            Some(("StatefulSet", "apps/v1", sts)),
        ),
    );
    let a = Exporter::start(NODE_A).await;
    let b = Exporter::start(NODE_B).await;
    let c = Exporter::start(&node_c(&pod_name)).await;
    let adapter = Adapter::start(&format!(
        r#"
poll_interval: 100ms
poll_timeout: 2s
kubernetes:
  kubeconfig: {kubeconfig}
sources:
  gpus:
    dcgm:
      endpoints: [{a}, {b}, {c}]
      scrape_timeout: 1s
      extra_labels:
        model_name: modelName
metrics:
  - {{name: gpu_utilization, source: gpus, measure: gpu_utilization}}
  - {{name: gpus_held, source: gpus, measure: gpu_utilization, dcgm: {{aggregate: gpus}}}}
"#,
        kubeconfig = stub.kubeconfig().display(),
        a = a.url,
        b = b.url,
        c = c.url,
    ))
    .await;
    adapter.ready().await;
    // inference: llm-infer on two GPU models, vllm, and the long StatefulSet on two models
    // (the fresh pod is no workload yet); batch: embed-worker.
    let path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/inference/gpu_utilization";
    eventually("the long StatefulSet resolved", || async {
        let (status, body) = adapter.get_json(path).await;
        let resolved = body["items"].as_array()?.iter().any(|i| {
            i["metricLabels"]["workload"]
                .as_str()
                .is_some_and(|w| w.starts_with("embedding-service"))
        });
        (status == 200 && resolved).then_some(())
    })
    .await;
    for metric in ["gpu_utilization", "gpus_held"] {
        each_series_is_selectable(&adapter, "inference", metric, 5).await;
        each_series_is_selectable(&adapter, "batch", metric, 1).await;
    }
}
