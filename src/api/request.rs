//! How every namespaced metric route reads its request: the `{namespace}/{metric}` path and the
//! query string, with one 400 `Status` for what cannot be read.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};

use crate::apimachinery::status::Status;

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
