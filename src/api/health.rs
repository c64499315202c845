//! Probes and the adapter's Prometheus endpoint. None of them needs an identity.
//!
//! - `/livez`: 200 while every poll loop ticks (from memory; a stuck loop fails it).
//! - `/readyz`: 200 once the servers listen and every source has finished a poll (successful or
//!   not), 503 while starting or shutting down. A failing backend does not make the adapter
//!   unready: its metrics answer 503 themselves, and the other sources' metrics stay served.
//! - `/healthz`: both.
//! - `/metrics`: the `qma_*` families.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::poller::Heartbeats;
use crate::store::Store;

/// Process-wide state the probes report on.
#[derive(Debug, Default)]
pub struct Health {
    listening: AtomicBool,
    stopping: AtomicBool,
}

impl Health {
    /// Marks the servers as listening.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// Marks the process as shutting down: `/readyz` turns 503 from now on.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Why the adapter is not ready, or `None` when it is.
    pub fn not_ready(&self, store: &Store) -> Option<String> {
        if self.stopping.load(Ordering::Acquire) {
            return Some("shutting down".into());
        }
        if !self.listening.load(Ordering::Acquire) {
            return Some("servers not listening yet".into());
        }
        let pending = store.unpolled_sources();
        (!pending.is_empty())
            .then(|| format!("waiting for the first poll of {}", pending.join(", ")))
    }

    /// Why the adapter is not live, or `None` when it is.
    pub fn not_live(heartbeats: &Heartbeats) -> Option<String> {
        let stuck = heartbeats.stuck();
        (!stuck.is_empty()).then(|| format!("poll loop stuck: {}", stuck.join(", ")))
    }
}

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

/// Shared handle type used by `AppState`.
pub type SharedHealth = Arc<Health>;
