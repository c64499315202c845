//! Backends the adapter reads from, one folder per kind, all behind [`Source`].
//!
//! A source knows how to read its backend once and turn the replies into [`Sample`]s. It knows
//! nothing of HTTP serving, the store or schedules: the poller calls [`Source::poll`] on an
//! interval and records the outcome. Sources only read; none sends a command that changes a
//! queue.
//!
//! The base every kind uses names no kind: [`source`] (the trait and the poll's error),
//! [`http`] (bodies read within a limit), [`build`] (what a source is built from), [`measure`]
//! (what a metric computes), [`age`] (an enqueue time to an age), [`rates`] (a counter's
//! readings to a rate over a window, and the drain-time rule), [`credentials`] and
//! [`field_group`] (fields several kinds' blocks share, read without serde's `flatten`).
//! What some kinds share: [`exposition`] (Prometheus-format scrapes, dcgm and inference) and
//! [`kubernetes`] (pod and EndpointSlice watches). [`metric`] is a metric as configured, with
//! each kind's block, and [`kinds`] the one file that dispatches over every kind.
//!
//! # Adding a source kind
//! 1. A folder `src/sources/<kind>/` with `mod.rs`, `config.rs` and what the reads need, and
//!    `pub mod <kind>;` below.
//! 2. In it, the connection block (`sources.<name>.<kind>`) and the metric block
//!    (`metrics[].<kind>`) as `Deserialize` types with `deny_unknown_fields`, and their checks
//!    (return [`crate::primitives::ConfigError::Invalid`] naming the field).
//! 3. A type implementing [`Source`] (one poll: read, never write); a unit type implementing
//!    [`build::Blocks`] (its two block types); the functions `validate_metric` and a
//!    constructor from a [`build::SourceSpec`].
//! 4. Its measures: new [`measure::Measure`] variants if it reads something new, with
//!    their names in `Measure::as_str`.
//! 5. In [`metric`]: its name in `KINDS`, and a field of `MetricTargets` (its metric block),
//!    which is a compile error in `MetricTargets::read` and `present` until written there.
//! 6. In [`kinds`]: a variant of `SourceConfig` and of `RunningSource`, an `impl Kind`, its key
//!    in `SourceConfig`'s reader, and its arm in every `match`: each `match` is a compile error
//!    until written (a throwaway `file` kind met 17 of them, and nothing else to edit).
//! 7. Tests beside it against the real backend (a private instance where the topology needs
//!    one), a line in the read-only test, and its section in the README.

pub mod age;
pub mod build;
pub mod credentials;
pub mod exposition;
pub mod field_group;
pub mod http;
pub mod kinds;
pub mod kubernetes;
pub mod measure;
pub mod metric;
pub mod rates;
pub mod source;
pub mod workers;

// The source kinds: a folder each; [`kinds`] names them all.
pub mod dcgm;
pub mod inference;
pub mod nats;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;

pub use http::DEFAULT_MAX_RESPONSE_BYTES;
pub use kinds::{RunningSource, SourceConfig};
pub use metric::{MetricConfig, MetricTargets};
pub use source::{Source, SourceError};

#[cfg(doc)]
use crate::model::Sample;
