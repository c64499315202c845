//! `metav1.Status` error bodies, the shape every Kubernetes client expects from a failed request.
//! No I/O here.

use serde::Serialize;

/// A `metav1.Status` failure (docs/reference/external-metrics-api.md §1.4).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    /// Human-readable; shown in the HPA's `FailedGetExternalMetric` event.
    pub message: String,
    /// Machine-readable CamelCase reason (`NotFound`, `BadRequest`, `ServiceUnavailable`, ...).
    pub reason: &'static str,
    /// The HTTP status code, repeated in the body as Kubernetes does.
    pub code: u16,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
struct Empty {}

impl Status {
    /// A failure with the given code, reason and message.
    pub fn failure(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Status {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: message.into(),
            reason,
            code,
        }
    }

    /// 404 `NotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::failure(404, "NotFound", message)
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::failure(400, "BadRequest", message)
    }

    /// 503 `ServiceUnavailable`: the HPA keeps its replicas and retries.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::failure(503, "ServiceUnavailable", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_like_metav1_status() {
        let json = serde_json::to_value(Status::not_found("no metric x")).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"no metric x","reason":"NotFound","code":404})
        );
    }
}
