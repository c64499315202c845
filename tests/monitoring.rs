//! deploy/monitoring stays true to what `/metrics` serves: every `qma_*` name in the Grafana
//! dashboard and the alert rules is a family a running adapter exposes (a renamed metric would
//! leave a panel empty or an alert silent). `promtool check rules` runs in
//! scripts/validate-manifests.sh.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Adapter, redis_url};
use queue_metrics_adapter::api::keda::metadata;
use queue_metrics_adapter::api::keda::pb::ScaledObjectRef;
use queue_metrics_adapter::api::keda::pb::external_scaler_client::ExternalScalerClient;

/// Every `qma_…` identifier in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("qma_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        // Not part of a longer word (e.g. a label called x_qma_y).
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            names.insert(text[start..end].to_string());
        }
        i = end.max(start + 4);
    }
    names
}

/// The sample names a `/metrics` text can have: each family, and a histogram's series.
fn exposed(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_count", "_sum"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_served_by_metrics() {
    let dir = std::env::temp_dir().join(format!("qma-monitoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = |extra: &str| {
        format!(
            "poll_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\n  down:\n    redis: {{url: \"redis://127.0.0.1:1/0\"}}\nmetrics:\n  - {{name: jobs, source: jobs, measure: length, redis: {{type: list, key: \"qma-test:monitoring:never-written\"}}}}\n  - {{name: broken, source: down, measure: length, redis: {{type: list, key: x}}}}\n{extra}",
            redis_url()
        )
    };
    let path = dir.join("config.yaml");
    std::fs::write(&path, config("")).expect("write");
    let a = Adapter::start_with(&config(""), |s| {
        s.config_path = Some(path.clone());
        s.config_reload_interval = Duration::from_millis(100);
    })
    .await;
    a.polls(3).await;
    // Every kind of event once: an HTTP request, a gRPC call, a push stream, a reload.
    let _ = a.metric("jobs", None).await;
    let grpc = a.running.as_ref().and_then(|r| r.grpc_addr).expect("gRPC");
    let mut g = ExternalScalerClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let object = ScaledObjectRef {
        name: "so".into(),
        namespace: "default".into(),
        scaler_metadata: metadata(&[("metricName", "jobs")]),
    };
    g.is_active(object.clone()).await.expect("IsActive");
    let _stream = g.stream_is_active(object).await.expect("stream");
    std::fs::write(&path, config("  - {name: jobs2, source: jobs, measure: length, redis: {type: list, key: \"qma-test:monitoring:other\"}}\n")).expect("write");
    let start = std::time::Instant::now();
    let metrics = loop {
        let (_, text) = a.get_text("/metrics").await;
        if text.contains("qma_config_reloads_total{result=\"applied\"}") {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no reload seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let served = exposed(&metrics);

    let root = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    for file in [
        "deploy/monitoring/dashboard.json",
        "deploy/monitoring/prometheusrule.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        let used = names_in(&text);
        assert!(!used.is_empty(), "{file} names no qma_ metric");
        for name in used {
            assert!(
                served.contains(&name),
                "{file} uses {name}, which /metrics does not serve; it serves {served:?}"
            );
            checked += 1;
        }
    }
    // The dashboard is one Grafana JSON document with a query in every panel.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/monitoring/dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard.json is JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            targets
                .iter()
                .all(|t| t["expr"].as_str().is_some_and(|e| e.contains("qma_"))),
            "panel {} has a target without a qma_ query",
            panel["title"]
        );
    }
    assert!(checked >= 10, "{checked}");
    a.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
