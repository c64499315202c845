//! The routes of each port ([`Routes`]), with request telemetry, the guard on the metric
//! routes, and the API's own 404 and 405 bodies.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;

use super::external_metrics;
use super::health;
use super::keda::metrics_api;
use super::observe;
use super::response;
use super::state::AppState;
use crate::apimachinery::status::Status;
use crate::security::Guard;
use crate::security::serving::PeerCertificate;

/// Which routes a router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// The external metrics API and the probes/metrics together (one port).
    All,
    /// Only the external metrics API.
    Api,
    /// Only probes and `/metrics`.
    Health,
}

/// Builds the router for `routes` over `state`, with request telemetry.
pub fn router(state: AppState, routes: Routes) -> Router {
    // Only the metric routes are guarded: probes and /metrics need no identity. Without a guard
    // (`--disable-auth`) no layer is added at all, rather than one that lets everything by.
    let mut api = external_metrics::routes().merge(metrics_api::routes());
    if let Some(g) = &state.guard {
        api = api.route_layer(middleware::from_fn_with_state(g.clone(), guard));
    }
    let r = match routes {
        Routes::All => api.merge(health::routes()),
        Routes::Api => api,
        Routes::Health => health::routes(),
    };
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(observe::ObserveLayer::new(state.clone()))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    response::status_response(Status::not_found(format!(
        "the server could not find the requested resource {}",
        uri.path()
    )))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    response::status_response(Status::failure(
        405,
        "MethodNotAllowed",
        format!(
            "the server does not allow {method} on {}; use GET",
            uri.path()
        ),
    ))
}

/// Refuses a metric request that the [`Guard`] does not let through.
async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    match admit(
        &guard,
        request.extensions(),
        request.headers(),
        request.uri().path(),
    )
    .await
    {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal,
    }
}

/// Whether `guard` lets through a request with these extensions, headers and path, and if not
/// the `Status` response that refuses it. The router's guard layer and [`super::service`]'s direct
/// metric path both ask it.
///
/// It takes the parts it reads rather than the request: a borrow of the whole request (whose
/// body is not `Sync`) held across the review would make the request's future unable to move
/// between threads.
pub(crate) async fn admit(
    guard: &Guard,
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    path: &str,
) -> Result<(), Response> {
    // The listener adds the certificate only when one was presented.
    let absent = PeerCertificate::default();
    let peer = extensions.get::<PeerCertificate>().unwrap_or(&absent);
    match guard.check(peer, headers, path).await {
        Ok(_) => Ok(()),
        Err(refusal) => {
            tracing::debug!(%path, ?refusal, "refused");
            Err(response::status_response(refusal.status()))
        }
    }
}
