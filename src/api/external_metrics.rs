//! The Kubernetes external metrics API (`external.metrics.k8s.io/v1beta1`): discovery documents
//! and metric values, read from the store only (docs/reference/external-metrics-api.md §1).
//!
//! Errors are `metav1.Status` bodies: 404 for an unknown metric or path, 400 for a bad label
//! selector, 503 for a stale or unavailable value (the HPA then keeps its replicas).

use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use super::AppState;
use super::http::{lookup_status, query_param, rfc3339_seconds, status_response};
use crate::k8s::quantity::format_quantity;
use crate::k8s::selector::Selector;
use crate::k8s::status::Status;
use crate::model::{MetricValue, SharedLabels};

/// The API group.
pub const GROUP: &str = "external.metrics.k8s.io";
/// The served version.
pub const VERSION: &str = "v1beta1";
/// `group/version`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

/// The routes of this API; state is supplied by [`super::router`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apis", get(api_group_list))
        .route("/apis/external.metrics.k8s.io", get(api_group))
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(api_resource_list),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
            get(metric_values),
        )
}

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

/// `ExternalMetricValueList` (k8s.io/metrics `external_metrics/v1beta1/types.go`).
#[derive(Debug, Serialize)]
pub struct ExternalMetricValueList {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    /// Never omitted: an empty list is `[]`.
    pub items: Vec<ExternalMetricValue>,
}

#[derive(Debug, Serialize, Default)]
struct Empty {}

/// One item of the list.
#[derive(Debug, Serialize)]
pub struct ExternalMetricValue {
    #[serde(rename = "metricName")]
    metric_name: String,
    /// Always present, `{}` when empty.
    #[serde(rename = "metricLabels")]
    metric_labels: SharedLabels,
    /// When the value was observed, RFC 3339 in whole seconds.
    timestamp: String,
    /// The quantity string.
    value: String,
}

/// Builds the response body for `values`.
///
/// # Errors
/// A 503 `Status` if a value cannot be written as a quantity (it is never replaced by another).
pub fn value_list(values: Vec<MetricValue>) -> Result<ExternalMetricValueList, Status> {
    let mut items = Vec::with_capacity(values.len());
    for v in values {
        let Some(quantity) = format_quantity(v.value) else {
            return Err(Status::unavailable(format!(
                "metric {}: value {} cannot be written as a Kubernetes quantity",
                v.metric, v.value
            )));
        };
        items.push(ExternalMetricValue {
            metric_name: v.metric,
            metric_labels: v.labels,
            timestamp: rfc3339_seconds(v.observed_at),
            value: quantity,
        });
    }
    Ok(ExternalMetricValueList {
        kind: "ExternalMetricValueList",
        api_version: GROUP_VERSION,
        metadata: Empty {},
        items,
    })
}

async fn metric_values(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Response {
    let (namespace, metric) = match path {
        Ok(Path(p)) => p,
        Err(e) => return status_response(Status::bad_request(format!("invalid path: {e}"))),
    };
    let selector = match query_param(uri.query(), "labelSelector").map(|s| Selector::parse(&s)) {
        None => Selector::everything(),
        Some(Ok(s)) => s,
        Some(Err(e)) => return status_response(Status::bad_request(e.to_string())),
    };
    match state
        .provider
        .get(&namespace, &metric, &selector, SystemTime::now())
    {
        Ok(values) => match value_list(values) {
            Ok(list) => Json(list).into_response(),
            Err(status) => status_response(status),
        },
        Err(e) => status_response(lookup_status(&e)),
    }
}
