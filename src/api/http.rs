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

use crate::k8s::status::Status;
use crate::store::LookupError;

/// `metav1.Time`: RFC 3339 in UTC with whole seconds.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(20);
    write_rfc3339_seconds(t, &mut out);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`rfc3339_seconds`] of `t` to `out`, digit by digit: the metric GET writes one per
/// value straight into its body, where a general formatter and its `String` were a visible
/// share of the request.
pub fn write_rfc3339_seconds(t: SystemTime, out: &mut Vec<u8>) {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Years 1970 to 9999: four digits, as RFC 3339 requires.
    let Ok(t) = OffsetDateTime::from_unix_timestamp(secs) else {
        out.extend_from_slice(b"1970-01-01T00:00:00Z");
        return;
    };
    let (year, month, day) = t.to_calendar_date();
    let year = u32::try_from(year).unwrap_or(1970);
    let two = |out: &mut Vec<u8>, n: u8| out.extend_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
    two(out, (year / 100) as u8);
    two(out, (year % 100) as u8);
    out.push(b'-');
    two(out, month as u8);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, t.hour());
    out.push(b':');
    two(out, t.minute());
    out.push(b':');
    two(out, t.second());
    out.push(b'Z');
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
    fn timestamps_are_written_as_the_rfc3339_formatter_writes_them() {
        use time::format_description::well_known::Rfc3339;
        let mut secs: u64 = 0;
        // From the epoch to the end of the year 9999, in steps of a little over 37 days that land
        // on every day of the month, hour and minute over the years.
        while secs < 253_402_300_799 {
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let want = OffsetDateTime::from_unix_timestamp(secs as i64)
                .expect("in range")
                .format(&Rfc3339)
                .expect("formats");
            assert_eq!(rfc3339_seconds(t), want, "at {secs}");
            secs += 37 * 86_400 + 3_601 + 61;
        }
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_951_646_399);
        assert_eq!(rfc3339_seconds(t), "2031-11-05T11:59:59Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_seconds(leap), "2000-02-29T00:00:00Z");
        let before = SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(rfc3339_seconds(before), "1970-01-01T00:00:00Z");
    }

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
