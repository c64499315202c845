//! queue-metrics-adapter: queue depth, oldest-message age and GPU utilization for Kubernetes
//! autoscaling, served from memory through the external metrics API and to KEDA.
//!
//! # Layout
//! Data flows one way: [`sources`] read backends -> [`poller`] schedules them -> [`store`] keeps
//! the latest snapshot -> [`api`] serves it; [`series_log`] tells the poller which series
//! started or stopped failing on their own. Construction flows one way too: [`cli`] reads the
//! command line, [`config`] the YAML file (its root and the whole-file checks; each kind's
//! blocks are its own), [`app`] wires everything for `serve` and [`check`] for `check`;
//! [`reload`] runs the sources a config names and swaps them on change.
//!
//! Beside them: [`model`] is the vocabulary every layer shares (series, labels, samples) and
//! [`primitives`] the config values (durations, secrets, redacted URLs, config errors);
//! [`apimachinery`] holds Kubernetes' API conventions (quantities, label rules and selectors,
//! `Status`) and [`kube_client`] the client; [`security`] guards the API port and the KEDA
//! port; [`telemetry`] is logging and our own metrics; [`wake`] the signal that polls a source
//! at once; [`file_watch`] notices changed files; [`shutdown`] owns the signal; [`tls`] the
//! crypto provider.
//!
//! The rules every module keeps: no API handler does backend I/O; no source knows about HTTP;
//! a failure is an error to the caller, never a `0`.

#![warn(missing_docs)]

pub mod api;
pub mod apimachinery;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod discover;
pub mod file_watch;
pub mod kube_client;
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
