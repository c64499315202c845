//! What every HTTP surface answers with and reads the same way: `metav1.Status` responses,
//! the lookup-error mapping, namespaced metric requests, and RFC 3339 timestamps. Shared by the
//! external metrics API, KEDA's metrics-api route and the listener's own refusals.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::k8s::status::Status;
use crate::store::LookupError;

/// `metav1.Time`: RFC 3339 in UTC with whole seconds.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The parts of a namespaced metric request: `{namespace}/{metric}` and the query parameters.
pub struct NamespacedRequest {
    /// The namespace in the path.
    pub namespace: String,
    /// The metric name in the path.
    pub metric: String,
    /// The query parameters.
    pub query: HashMap<String, String>,
}

/// Reads a namespaced metric request, or the 400 `Status` naming what could not be read.
/// Shared by every namespaced metric route.
///
/// # Errors
/// A `Status` 400 for an unreadable path or query string.
pub fn namespaced_request(
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<NamespacedRequest, Status> {
    match (path, query) {
        (Ok(Path((namespace, metric))), Ok(Query(query))) => Ok(NamespacedRequest {
            namespace,
            metric,
            query,
        }),
        (Err(e), _) => Err(Status::bad_request(format!("invalid path: {e}"))),
        (_, Err(e)) => Err(Status::bad_request(format!("invalid query string: {e}"))),
    }
}

/// The last value of parameter `name` in a query string, decoded (`%XX`, `+`), as a map of the
/// parameters would hold it. The metric GET reads one parameter; decoding the query into a map
/// of owned strings was a tenth of its CPU, in the allocator.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .filter(|(k, _)| k == name)
        .last()
        .map(|(_, v)| v.into_owned())
}

/// The one mapping of lookup errors to HTTP statuses for this surface.
pub fn lookup_status(e: &LookupError) -> Status {
    match e {
        LookupError::UnknownMetric { .. } => Status::not_found(e.to_string()),
        LookupError::Stale { .. } | LookupError::Unavailable { .. } => {
            Status::unavailable(e.to_string())
        }
    }
}

/// Serializes a `Status` with its code.
pub fn status_response(status: Status) -> Response {
    let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(status)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_parameter_is_decoded_and_its_last_value_wins_as_in_a_map() {
        let raw = "limit=5&labelSelector=queue%3Dembed&labelSelector=tier+in+%28gpu%29";
        let q = Some(raw);
        assert_eq!(
            query_param(q, "labelSelector").as_deref(),
            Some("tier in (gpu)")
        );
        assert_eq!(query_param(q, "limit").as_deref(), Some("5"));
        assert_eq!(query_param(q, "labelselector"), None);
        assert_eq!(query_param(None, "labelSelector"), None);
        assert_eq!(
            query_param(Some("labelSelector"), "labelSelector").as_deref(),
            Some("")
        );
        let map: HashMap<String, String> = form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(
            map.get("labelSelector"),
            query_param(q, "labelSelector").as_ref()
        );
    }
}
