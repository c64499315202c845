//! The HTTP surfaces, reading from the store only. No handler does backend I/O.
//!
//! [`router`] builds the routes without binding anything; [`service::Service`] is that router
//! with the metric GET answered before it: what the benchmarks drive in memory and what
//! [`listener::serve`] runs on a listener, over TLS or not, within the bounds every listener
//! keeps, until shutdown, letting in-flight requests finish.

pub mod external_metrics;
pub mod health;
pub mod keda;
pub mod listener;
pub mod observe;
pub mod request;
pub mod response;
pub mod selectors;
pub mod service;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::apimachinery::status::Status;
use crate::poller::Heartbeats;
use crate::security::Guard;
use crate::security::serving::PeerCertificate;
use crate::store::{MetricsProvider, Store};
use crate::telemetry::Telemetry;

/// What every handler may read: one `Arc`, because axum clones the state for every `State`
/// extractor of every request, and a clone of each field would be a dozen reference counts
/// (atomic writes to lines that every core shares) per request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state holding `shared`.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    /// The metric values, behind the read-only trait.
    pub provider: Arc<dyn MetricsProvider>,
    /// The same store, for probes and telemetry.
    pub store: Arc<Store>,
    /// Our own metrics.
    pub telemetry: Telemetry,
    /// Readiness state.
    pub health: health::SharedHealth,
    /// Poll-loop heartbeats, for liveness.
    pub heartbeats: Arc<Heartbeats>,
    /// Authentication and authorization of the metric routes; `None` when disabled
    /// (`--disable-auth`, local development).
    pub guard: Option<Arc<Guard>>,
    /// The label selectors of recent metric requests, parsed once.
    pub selectors: selectors::SelectorCache,
}

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
    let mut api = external_metrics::routes().merge(keda::metrics_api::routes());
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
/// the `Status` response that refuses it. The router's guard layer and [`service`]'s direct
/// metric path both ask it.
///
/// It takes the parts it reads rather than the request: a borrow of the whole request (whose
/// body is not `Sync`) held across the review would make the request's future unable to move
/// between threads.
async fn admit(
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
