//! What a listener serves: the router of [`super::router()`], with the metric GET answered before
//! it.
//!
//! `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}` is the request the
//! adapter answers most (every HPA, every sync period), from memory in microseconds. Routing it
//! through axum (the path matched against the route table, its parameters collected and
//! percent-decoded into owned strings, the matched template and the parameters stored in the
//! request's extensions, the extractors run) was about a sixth of its cost (BENCHMARKS.md). A
//! request of exactly that shape is answered here by the same function as the route's handler,
//! behind the same guard, and counted under the same route template. Anything else (another
//! method, a segment with a percent escape, a trailing slash, an empty segment) goes to the
//! router, which answers it as it always has.

use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use tower::ServiceExt as _;

use super::external_metrics::{METRIC_VALUES_ROUTE, NAMESPACES_PREFIX, values_of};
use super::observe;
use super::router::{Routes, admit, router};
use super::state::AppState;

/// The router for a set of routes, and the state of the direct metric path when those routes
/// include the external metrics API. Cheap to clone (two reference counts).
#[derive(Clone)]
pub struct Service {
    router: Router,
    direct: Option<AppState>,
}

impl Service {
    /// Serves `routes` over `state`.
    pub fn new(state: AppState, routes: Routes) -> Self {
        let direct = (routes != Routes::Health).then(|| state.clone());
        Service {
            router: router(state, routes),
            direct,
        }
    }

    /// The response to `request`.
    pub async fn answer(&self, request: Request) -> Response {
        if let Some(state) = &self.direct
            && request.method() == Method::GET
            && let Some((namespace, metric)) = metric_path(request.uri().path())
        {
            let started = Instant::now();
            let refused = match &state.guard {
                Some(guard) => admit(
                    guard,
                    request.extensions(),
                    request.headers(),
                    request.uri().path(),
                )
                .await
                .err(),
                None => None,
            };
            let response = refused
                .unwrap_or_else(|| values_of(state, namespace, metric, request.uri().query()));
            observe::record(state, METRIC_VALUES_ROUTE, &response, started);
            return response;
        }
        match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("direct_metric_path", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

/// The namespace and metric of a path that is exactly `…/namespaces/{namespace}/{metric}` with
/// two non-empty segments the router would pass on unchanged (no percent escape); `None` for any
/// other path, which the router then answers.
fn metric_path(path: &str) -> Option<(&str, &str)> {
    let (namespace, metric) = path.strip_prefix(NAMESPACES_PREFIX)?.split_once('/')?;
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '%']);
    (plain(namespace) && plain(metric)).then_some((namespace, metric))
}

#[cfg(test)]
mod tests {
    use super::{METRIC_VALUES_ROUTE, NAMESPACES_PREFIX, metric_path};

    #[test]
    fn only_the_exact_shape_of_a_metric_path_is_taken_directly() {
        // The prefix matched here is the route's, up to its parameters.
        assert_eq!(
            METRIC_VALUES_ROUTE.strip_prefix(NAMESPACES_PREFIX),
            Some("{namespace}/{metric}")
        );
        let p = "/apis/external.metrics.k8s.io/v1beta1/namespaces/";
        assert_eq!(
            metric_path(&format!("{p}default/len")),
            Some(("default", "len"))
        );
        for other in [
            format!("{p}default/len/"),
            format!("{p}default/len/x"),
            format!("{p}default/"),
            format!("{p}/len"),
            format!("{p}default"),
            format!("{p}def%61ult/len"),
            format!("{p}default/l%65n"),
            "/apis/external.metrics.k8s.io/v1beta1".to_string(),
            "/apis/external.metrics.k8s.io/v1beta1/namespaces".to_string(),
            "/api/v1/namespaces/default/len".to_string(),
        ] {
            assert_eq!(metric_path(&other), None, "{other}");
        }
    }
}
