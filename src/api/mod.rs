//! The HTTP surfaces, reading from the store only. No handler does backend I/O.
//!
//! [`router()`] builds the routes without binding anything; [`service::Service`] is that router
//! with the metric GET answered before it: what the benchmarks drive in memory and what
//! [`listener::serve`] runs on a listener, over TLS or not, within the bounds every listener
//! keeps, until shutdown, letting in-flight requests finish.

pub mod external_metrics;
pub mod health;
pub mod health_state;
pub mod keda;
pub mod listener;
pub mod observe;
pub mod request;
pub mod response;
pub mod router;
pub mod selectors;
pub mod service;
pub mod state;

pub use router::{Routes, router};
pub use state::{AppState, Shared};
