//! What every handler may read: the store, telemetry, probe state, heartbeats, the guard and
//! the selector cache, behind one `Arc`.

use std::sync::Arc;

use super::health_state::SharedHealth;
use super::selectors::SelectorCache;
use crate::poller::Heartbeats;
use crate::security::Guard;
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
    pub health: SharedHealth,
    /// Poll-loop heartbeats, for liveness.
    pub heartbeats: Arc<Heartbeats>,
    /// Authentication and authorization of the metric routes; `None` when disabled
    /// (`--disable-auth`, local development).
    pub guard: Option<Arc<Guard>>,
    /// The label selectors of recent metric requests, parsed once.
    pub selectors: SelectorCache,
}
