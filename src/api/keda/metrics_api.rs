//! A plain JSON endpoint for KEDA's `metrics-api` scaler, for clusters that prefer it to gRPC:
//! `GET /keda/v1/namespaces/{ns}/{metric}?labelSelector=...&aggregate=sum|max|mean&activationValue=N`
//! answers `{"metric": ..., "value": 12.5, "active": true, "series": 2, "timestamp": ...}`; point the
//! trigger's `valueLocation` at `value`. Same semantics as the gRPC scaler: 404 unknown metric or no
//! matching series (except for a Redis list or sorted-set pattern, where no series is an observed
//! empty backlog: `0`), 400 bad parameters, 503 stale or unavailable, never a value for a failure.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::trigger::{Trigger, TriggerLookupError};
use crate::api::request::{NamespacedRequest, namespaced_request};
use crate::api::response::{lookup_status, rfc3339_seconds, status_response};
use crate::api::state::AppState;
use crate::apimachinery::status::Status;

/// The route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/keda/v1/namespaces/{namespace}/{metric}", get(value))
}

async fn value(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let NamespacedRequest {
        namespace,
        metric,
        mut query,
    } = match namespaced_request(path, query) {
        Ok(r) => r,
        Err(status) => return status_response(status),
    };
    query.insert("metricName".into(), metric);
    let trigger = match Trigger::parse(&query, false) {
        Ok(t) => t,
        Err(e) => return status_response(Status::bad_request(e.to_string())),
    };
    match trigger.reading(state.provider.as_ref(), &namespace, SystemTime::now()) {
        Ok(r) => Json(json!({
            "metric": trigger.metric,
            "value": r.value,
            "active": trigger.is_active(r.value),
            "series": r.series,
            "timestamp": rfc3339_seconds(r.observed_at),
        }))
        .into_response(),
        Err(TriggerLookupError::Lookup(e)) => status_response(lookup_status(&e)),
        Err(e @ TriggerLookupError::NoSeries { .. }) => {
            status_response(Status::not_found(e.to_string()))
        }
    }
}
