//! The external metrics API's wire contract, checked field by field against what a real Redis
//! holds: discovery documents, `ExternalMetricValueList`, `metav1.Status` errors, probes and
//! `/metrics`.

mod common;

use common::{Adapter, Cleanup, cmd, connect, prefix, redis_url};
use queue_metrics_adapter::apimachinery::label::encode_value;
use serde_json::json;

const API: &str = "/apis/external.metrics.k8s.io/v1beta1";

/// A 400 `BadRequest` whose message names `what`.
fn assert_bad_request(status: u16, body: &serde_json::Value, what: &str) {
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("BadRequest")),
        "{body}"
    );
    assert!(
        body["message"].as_str().expect("message").contains(what),
        "{body}"
    );
}

async fn adapter_with_queue(p: &str) -> Adapter {
    let mut c = connect(&redis_url()).await;
    cmd::<i64>(
        &mut c,
        &["LPUSH", &format!("{p}queue:embed"), "a", "b", "c"],
    )
    .await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}queue:rerank"), "a"]).await;
    Adapter::start(&format!(
        "poll_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: embedding_queue_length, source: jobs, measure: length, labels: {{queue: embed}}, redis: {{type: list, key: \"{p}queue:embed\"}}}}\n  - {{name: queues, source: jobs, measure: length, redis: {{type: list, pattern: \"{p}queue:*\"}}}}\n  - {{name: ml_only, source: jobs, measure: length, namespaces: [ml], redis: {{type: list, key: \"{p}queue:embed\"}}}}\n",
        redis_url()
    ))
    .await
}

#[tokio::test]
async fn discovery_documents_list_every_configured_metric() {
    let p = prefix("discovery");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = adapter_with_queue(&p).await;
    let version = json!({"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"});

    let (status, body) = a.get_json("/apis").await;
    assert_eq!(status, 200);
    assert_eq!(body["kind"], "APIGroupList");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["groups"][0]["name"], "external.metrics.k8s.io");
    assert_eq!(body["groups"][0]["versions"][0], version);
    assert_eq!(body["groups"][0]["preferredVersion"], version);

    let (status, body) = a.get_json("/apis/external.metrics.k8s.io").await;
    assert_eq!(status, 200);
    assert_eq!(body["kind"], "APIGroup");
    assert_eq!(body["name"], "external.metrics.k8s.io");
    assert_eq!(body["preferredVersion"], version);

    // Served before any poll: it is the aggregator's availability probe.
    let (status, body) = a.get_json(API).await;
    assert_eq!(status, 200);
    assert_eq!(body["kind"], "APIResourceList");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["groupVersion"], "external.metrics.k8s.io/v1beta1");
    let resources = body["resources"].as_array().expect("resources");
    let names: Vec<&str> = resources
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["embedding_queue_length", "ml_only", "queues"]);
    assert_eq!(
        resources[0],
        json!({"name": "embedding_queue_length", "singularName": "", "namespaced": true,
               "kind": "ExternalMetricValueList", "verbs": ["get"]})
    );
    a.stop().await;
}

#[tokio::test]
async fn metric_values_are_an_external_metric_value_list() {
    let p = prefix("values");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = adapter_with_queue(&p).await;
    a.polls(1).await;
    let (status, body) = a.metric("embedding_queue_length", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "ExternalMetricValueList");
    assert_eq!(body["apiVersion"], "external.metrics.k8s.io/v1beta1");
    assert_eq!(body["metadata"], json!({}));
    let item = &body["items"][0];
    assert_eq!(item["metricName"], "embedding_queue_length");
    assert_eq!(
        item["metricLabels"],
        // The full key, encoded: `:` is not valid in a label value (apimachinery::label::encode_value).
        json!({"queue": "embed", "key": encode_value(&format!("{p}queue:embed"))})
    );
    assert_eq!(item["value"], "3");
    let ts = item["timestamp"].as_str().expect("timestamp");
    let parsed = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let age = time::OffsetDateTime::now_utc() - parsed;
    assert!(
        age.whole_seconds() >= 0 && age.whole_seconds() < 5,
        "timestamp {ts} is when it was observed"
    );
    assert!(
        ts.ends_with('Z') && !ts.contains('.'),
        "whole seconds, UTC: {ts}"
    );
    assert!(item.get("window").is_none(), "no window for gauges");
    a.stop().await;
}

#[tokio::test]
async fn errors_are_metav1_status_with_the_right_codes() {
    let p = prefix("errors");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = adapter_with_queue(&p).await;
    a.polls(1).await;

    let (status, body) = a.metric("no_such_metric", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["code"], 404);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("no_such_metric")
    );

    let (status, body) = a
        .get_json(&format!(
            "{API}/namespaces/default/queues?labelSelector=queue%3Da%3Ab"
        ))
        .await;
    assert_bad_request(status, &body, "\"a:b\"");

    let (status, body) = a
        .get_json(&format!(
            "{API}/namespaces/default/queues?labelSelector=%ZZ"
        ))
        .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (400, Some("Status")),
        "{body}"
    );

    // Namespace-restricted metric: unknown elsewhere.
    assert_eq!(a.metric("ml_only", None).await.0, 404);
    let (status, _) = a.get_json(&format!("{API}/namespaces/ml/ml_only")).await;
    assert_eq!(status, 200);

    // Paths the API does not have.
    assert_eq!(
        a.get_json(&format!("{API}/embedding_queue_length")).await.0,
        404
    );
    assert_eq!(
        a.get_json(&format!("{API}/namespaces/default")).await.0,
        404
    );
    assert_eq!(
        a.get_json(&format!("{API}/namespaces/default/group/metric"))
            .await
            .0,
        404
    );
    // client-go lowercases names; a capitalised request still finds the metric.
    assert_eq!(a.metric("Embedding_Queue_Length", None).await.0, 200);
    a.stop().await;
}

#[tokio::test]
async fn probes_and_prometheus_metrics_say_what_they_mean() {
    let p = prefix("probes");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = adapter_with_queue(&p).await;
    a.polls(1).await;
    assert_eq!(a.get_text("/livez").await.0, 200);
    assert_eq!(a.get_text("/readyz").await.0, 200);
    assert_eq!(a.get_text("/healthz").await.0, 200);
    a.metric("embedding_queue_length", None).await;
    let (status, text) = a.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        !text.contains("qma_metric_value"),
        "no values on the unauthenticated port by default:\n{text}"
    );
    for want in [
        "qma_poll_duration_seconds_bucket{source=\"jobs\"",
        "qma_metric_data_age_seconds{metric=\"queues\"}",
        "qma_http_requests_total{code=\"200\",endpoint=\"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}\"}",
        "qma_metric_series{metric=\"queues\",state=\"ok\"} 2",
    ] {
        assert!(text.contains(want), "/metrics lacks {want:?}:\n{text}");
    }
    a.stop().await;
}

#[tokio::test]
async fn values_reach_metrics_only_when_opted_in_with_unique_label_names() {
    let p = prefix("metrics-values");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}q"), "a", "b"]).await;
    let a = Adapter::start_with(
        &format!(
            "poll_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: embedding_queue_length, source: jobs, measure: length, labels: {{team.name: ml, team_name: search}}, redis: {{type: list, key: \"{p}q\"}}}}\n",
            redis_url()
        ),
        |s| s.metrics_show_values = true,
    )
    .await;
    a.polls(1).await;
    let (_, text) = a.get_text("/metrics").await;
    let line = text
        .lines()
        .find(|l| l.starts_with("qma_metric_value{metric=\"embedding_queue_length\",key="))
        .unwrap_or_else(|| panic!("no value line:\n{text}"));
    assert!(line.ends_with(" 2"), "{line}");
    // /metrics keeps the raw value the API serves encoded: any UTF-8 is a Prometheus value.
    assert!(line.contains(&format!(",key=\"{p}q\",")), "{line}");
    assert!(
        line.contains("team_name=\"ml\"") && line.contains("team_name_2=\"search\""),
        "two keys that become one Prometheus name stay two labels: {line}"
    );
    a.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_the_first_poll_and_an_unreachable_source_never_serves_zero() {
    // Nothing listens on port 1: every poll fails to connect.
    let a = Adapter::start(
        "poll_interval: 200ms\nsources:\n  down:\n    redis: {url: \"redis://:url-secret@127.0.0.1:1/0\"}\nmetrics:\n  - {name: q, source: down, measure: length, redis: {type: list, key: q}}\n",
    )
    .await;
    a.polls(1).await;
    let (status, body) = a.metric("q", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "ServiceUnavailable");
    let message = body["message"].as_str().expect("message");
    assert!(message.contains("cannot connect"), "{body}");
    assert!(
        !message.contains("url-secret"),
        "no password in errors: {message}"
    );
    // Ready: the adapter serves, and says per metric that this source is down.
    assert_eq!(a.get_text("/readyz").await.0, 200);
    let (_, text) = a.get_text("/metrics").await;
    assert!(
        !text.contains("qma_metric_value{metric=\"q\""),
        "no value line while unavailable"
    );
    assert!(!text.contains("url-secret"), "no password in /metrics");
    assert!(
        text.contains("qma_poll_errors_total{kind=\"connect\",source=\"down\"}"),
        "{text}"
    );
    a.stop().await;
}

/// The metric GET of the usual shape is answered before axum's router (`api::service`); any other
/// spelling of the same request goes through the router. Both must give the same answer and be
/// counted under the same route.
#[tokio::test]
async fn a_metric_request_is_answered_alike_however_its_path_is_written() {
    let p = prefix("spelling");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = adapter_with_queue(&p).await;
    a.polls(1).await;
    let plain = a
        .get_text(&format!(
            "{API}/namespaces/default/queues?labelSelector=queue%3Dembed"
        ))
        .await;
    let escaped = a
        .get_text(&format!(
            "{API}/namespaces/def%61ult/qu%65ues?labelSelector=queue%3Dembed"
        ))
        .await;
    assert_eq!(plain.0, 200, "{}", plain.1);
    assert_eq!(plain, escaped, "a percent escape changes nothing");
    let missing = a.get_json(&format!("{API}/namespaces/default/nope")).await;
    let missing_escaped = a
        .get_json(&format!("{API}/namespaces/default/n%6Fpe"))
        .await;
    assert_eq!((missing.0, &missing.1), (404, &missing_escaped.1));

    // A segment that is no UTF-8 once decoded is a bad request, named as such.
    let (status, body) = a.get_json(&format!("{API}/namespaces/default/%FF")).await;
    assert_bad_request(status, &body, "invalid path");
    // A trailing slash or no metric is another path, which the API does not have.
    for other in ["default/queues/", "default/"] {
        assert_eq!(
            a.get_json(&format!("{API}/namespaces/{other}")).await.0,
            404,
            "{other}"
        );
    }

    let client = common::http_client();
    let url = format!("{}{API}/namespaces/default/queues", a.base);
    let post = client.post(&url).send().await.expect("POST");
    assert_eq!(post.status(), 405);
    let head = client.head(&url).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);

    let (_, text) = a.get_text("/metrics").await;
    let count = |code: &str| -> f64 {
        let series = format!(
            "qma_http_requests_total{{code=\"{code}\",endpoint=\"/apis/external.metrics.k8s.io/v1beta1/namespaces/{{namespace}}/{{metric}}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0.0, |v| v.parse().expect("a count"))
    };
    // Two 200s by GET and the HEAD; two 404s; the undecodable one.
    assert_eq!(
        (count("200"), count("404"), count("400")),
        (3.0, 2.0, 1.0),
        "{text}"
    );
    a.stop().await;
}
