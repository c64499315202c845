//! queue-metrics-adapter: queue depth, oldest-message age and GPU utilization for Kubernetes
//! autoscaling, served from memory through the external metrics API and to KEDA.
//!
//! # Layout
//! Data flows one way: [`sources`] read backends -> [`poller`] schedules them -> [`store`] keeps
//! the latest snapshot -> [`api`] serves it; [`series_log`] tells the poller which series
//! started or stopped failing on their own. [`model`] is the vocabulary they share and
//! [`primitives`] the config values every layer uses; [`k8s`] holds Kubernetes wire details
//! (quantities, selectors, `Status`) and the client; [`config`] is the YAML file's root, and
//! [`sources::kinds`] the one place that dispatches each source to its kind; [`reload`] runs the sources a config names and swaps them
//! on change; [`security`] guards the API port and the KEDA port; [`app`] wires it all for
//! `serve`, [`check`] for `check`; [`telemetry`] is logging and our own metrics; [`shutdown`]
//! owns the signal; [`tls`] the crypto provider.
//!
//! The rules every module keeps: no API handler does backend I/O; no source knows about HTTP;
//! a failure is an error to the caller, never a `0`.

#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod file_watch;
pub mod k8s;
pub mod model;
pub mod poller;
pub mod primitives;
pub mod reload;
pub mod security;
pub mod series_log;
pub mod shutdown;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod wake;
