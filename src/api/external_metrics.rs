//! The Kubernetes external metrics API (`external.metrics.k8s.io/v1beta1`): discovery documents
//! and metric values, read from the store only (docs/reference/external-metrics-api.md §1).
//!
//! Errors are `metav1.Status` bodies: 404 for an unknown metric or path, 400 for a bad label
//! selector, 503 for a stale or unavailable value (the HPA then keeps its replicas).

use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::response::{lookup_status, status_response, write_rfc3339_seconds};
use super::state::{AppState, Shared};
use crate::apimachinery::quantity::format_quantity;
use crate::apimachinery::status::Status;
use crate::model::MetricValue;

/// The API group.
pub const GROUP: &str = "external.metrics.k8s.io";
/// The served version.
pub const VERSION: &str = "v1beta1";
/// `group/version`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

/// The routes of this API; state is supplied by [`super::router()`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apis", get(api_group_list))
        .route("/apis/external.metrics.k8s.io", get(api_group))
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(api_resource_list),
        )
        .route(METRIC_VALUES_ROUTE, get(metric_values))
}

/// The route of a metric's values, as request telemetry names it.
pub const METRIC_VALUES_ROUTE: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}";

/// The prefix of [`METRIC_VALUES_ROUTE`] before its parameters.
pub const NAMESPACES_PREFIX: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/";

fn group_document() -> serde_json::Value {
    let version = json!({"groupVersion": GROUP_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [version], "preferredVersion": version})
}

async fn api_group_list() -> Response {
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_document()]}))
        .into_response()
}

async fn api_group() -> Response {
    let mut group = group_document();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    Json(group).into_response()
}

/// The availability probe of the aggregator: it must answer 2xx within 5 s, from memory.
async fn api_resource_list(State(state): State<AppState>) -> Response {
    let resources: Vec<serde_json::Value> = state
        .provider
        .list_metrics()
        .into_iter()
        .map(|m| {
            json!({"name": m.name, "singularName": "", "namespaced": true,
                   "kind": "ExternalMetricValueList", "verbs": ["get"]})
        })
        .collect();
    Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION, "resources": resources}))
        .into_response()
}

/// The `ExternalMetricValueList` of `values` (k8s.io/metrics
/// `external_metrics/v1beta1/types.go`) as JSON: `kind`, `apiVersion`, an empty `metadata` and
/// `items` (never omitted: an empty list is `[]`), each item's `metricName`, `metricLabels`
/// (always present, `{}` when empty, in name order), `timestamp` (when the value was observed,
/// RFC 3339 in whole seconds) and `value` (the quantity string).
///
/// Written straight into one buffer sized for it, strings escaped by `serde_json`: building the
/// list of owned strings and serializing it was about a third of the metric GET's own work.
///
/// # Errors
/// A 503 `Status` if a value cannot be written as a quantity (it is never replaced by another).
pub fn value_list_body(values: &[MetricValue]) -> Result<Vec<u8>, Status> {
    let mut out = Vec::with_capacity(128 + 192 * values.len());
    out.extend_from_slice(br#"{"kind":"ExternalMetricValueList","apiVersion":"#);
    json_string(&mut out, GROUP_VERSION);
    out.extend_from_slice(br#","metadata":{},"items":["#);
    for (i, v) in values.iter().enumerate() {
        let Some(quantity) = format_quantity(v.value) else {
            return Err(Status::unavailable(format!(
                "metric {}: value {} cannot be written as a Kubernetes quantity",
                v.metric, v.value
            )));
        };
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"metricName":"#);
        json_string(&mut out, &v.metric);
        out.extend_from_slice(br#","metricLabels":{"#);
        for (j, (name, value)) in v.labels.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json_string(&mut out, name);
            out.push(b':');
            json_string(&mut out, value);
        }
        out.extend_from_slice(br#"},"timestamp":""#);
        write_rfc3339_seconds(v.observed_at, &mut out);
        out.extend_from_slice(br#"","value":""#);
        // Digits, a sign and `m`: nothing to escape.
        out.extend_from_slice(quantity.as_bytes());
        out.extend_from_slice(br#""}"#);
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it.
fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A 200 with a JSON `body`, as `axum::Json` answers.
fn json_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn metric_values(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Response {
    match path {
        Ok(Path((namespace, metric))) => values_of(&state, &namespace, &metric, uri.query()),
        Err(e) => status_response(Status::bad_request(format!("invalid path: {e}"))),
    }
}

/// The answer to a request for `metric`'s values in `namespace` with the query string `query`:
/// the `ExternalMetricValueList`, or the `Status` saying why there is none. The route's handler
/// and [`super::service`]'s direct path both answer with it.
pub fn values_of(state: &Shared, namespace: &str, metric: &str, query: Option<&str>) -> Response {
    let selector = match state.selectors.selector(query) {
        Ok(s) => s,
        Err(e) => return status_response(Status::bad_request(e.to_string())),
    };
    match state
        .provider
        .get(namespace, metric, &selector, SystemTime::now())
    {
        Ok(values) => match value_list_body(&values) {
            Ok(body) => json_response(body),
            Err(status) => status_response(status),
        },
        Err(e) => status_response(lookup_status(&e)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::model::Labels;

    fn value(labels: &[(&str, &str)], v: f64, secs: u64) -> MetricValue {
        MetricValue {
            metric: "embedding_queue_length".into(),
            labels: Arc::new(Labels::from_iter(
                labels.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )),
            value: v,
            observed_at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_body_is_the_external_metric_value_list_kubernetes_reads() {
        let values = [
            value(
                &[("queue", "embed"), ("key", "queue:embed")],
                1234.0,
                1_951_646_399,
            ),
            value(&[], 0.25, 0),
        ];
        let body = value_list_body(&values).expect("quantities");
        let text = std::str::from_utf8(&body).expect("utf-8");
        assert_eq!(
            text,
            concat!(
                r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":["#,
                r#"{"metricName":"embedding_queue_length","metricLabels":{"key":"queue_embed-820b359820","queue":"embed"},"timestamp":"2031-11-05T11:59:59Z","value":"1234"},"#,
                r#"{"metricName":"embedding_queue_length","metricLabels":{},"timestamp":"1970-01-01T00:00:00Z","value":"250m"}]}"#
            )
        );
        let empty = value_list_body(&[]).expect("nothing to write");
        let parsed: serde_json::Value = serde_json::from_slice(&empty).expect("JSON");
        assert_eq!(parsed["items"], json!([]));
        assert_eq!(parsed["metadata"], json!({}));
    }

    #[test]
    fn labels_are_escaped_as_json() {
        // Values are served encoded (crate::apimachinery::label::encode_value), so only a name can
        // still need escaping; both go through the same writer.
        let tricky = "a \"quoted\" \\ back\u{1}slash\nnew line, é, \u{2028}";
        let body = value_list_body(&[value(&[(tricky, tricky)], 1.5, 60)]).expect("quantity");
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(
            parsed["items"][0]["metricLabels"][tricky],
            json!(crate::apimachinery::label::encode_value(tricky))
        );
        assert_eq!(parsed["items"][0]["value"], json!("1500m"));
        assert_eq!(
            parsed["items"][0]["timestamp"],
            json!("1970-01-01T00:01:00Z")
        );
    }

    #[test]
    fn a_value_that_is_no_quantity_is_refused_not_replaced() {
        let status = value_list_body(&[value(&[], 1.0, 0), value(&[], f64::INFINITY, 0)])
            .expect_err("infinite");
        assert_eq!(status.code, 503);
        assert!(
            status.message.contains("embedding_queue_length"),
            "{}",
            status.message
        );
    }
}
