//! Probes and the adapter's Prometheus endpoint. None of them needs an identity.
//!
//! - `/livez`: 200 while every poll loop ticks (from memory; a stuck loop fails it).
//! - `/readyz`: 200 once the servers listen and every source has finished a poll (successful or
//!   not), 503 while starting or shutting down. A failing backend does not make the adapter
//!   unready: its metrics answer 503 themselves, and the other sources' metrics stay served.
//! - `/healthz`: both.
//! - `/metrics`: the `qma_*` families.

use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::health_state::Health;
use super::state::AppState;

/// Probe and `/metrics` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

fn probe(problem: Option<String>) -> Response {
    match problem {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn livez(State(s): State<AppState>) -> Response {
    probe(Health::not_live(&s.heartbeats))
}

async fn readyz(State(s): State<AppState>) -> Response {
    probe(s.health.not_ready(&s.store))
}

async fn healthz(State(s): State<AppState>) -> Response {
    probe(Health::not_live(&s.heartbeats).or_else(|| s.health.not_ready(&s.store)))
}

async fn metrics(State(s): State<AppState>) -> Response {
    let body = s.telemetry.render(&s.store, SystemTime::now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
