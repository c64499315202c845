//! What the probes report on: whether the servers listen, whether the process is stopping, and
//! (from the poll loops' heartbeats) whether any loop is stuck. Set by `app`, read by the probe
//! routes in `health`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Shared handle type used by `AppState`.
pub type SharedHealth = Arc<Health>;
