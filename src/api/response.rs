//! What every HTTP surface answers with: a `metav1.Status` body with its code, the one mapping
//! of lookup errors to statuses, and `metav1.Time` timestamps. Shared by the external metrics
//! API, KEDA's metrics-api route and the listener's own refusals.

use std::time::SystemTime;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use crate::apimachinery::status::Status;
use crate::store::LookupError;

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
}
