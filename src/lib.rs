//! queue-metrics-adapter: queue depth, oldest-message age and (later) GPU utilization for
//! Kubernetes autoscaling, served from memory through the external metrics API.
//!
//! # Layout
//! Data flows one way: [`sources`] read backends -> [`poller`] schedules them -> [`store`] keeps
//! the latest snapshot -> [`api`] serves it. [`model`] is the vocabulary they share; [`k8s`] holds
//! Kubernetes wire details (quantities, selectors, `Status`); [`config`] is the YAML schema;
//! [`app`] wires it all for `serve`, [`check`] for `check`; [`telemetry`] is logging and our own
//! metrics; [`shutdown`] owns the signal; [`tls`] the crypto provider.
//!
//! The rules every module keeps: no API handler does backend I/O; no source knows about HTTP;
//! a failure is an error to the caller, never a `0`.

#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod check;
pub mod config;
pub mod file_watch;
pub mod k8s;
pub mod model;
pub mod poller;
pub mod reload;
pub mod security;
pub mod shutdown;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod tls;
