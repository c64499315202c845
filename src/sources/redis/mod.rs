//! The Redis source: lists, streams and sorted sets used as queues, read-only, on one server,
//! a Sentinel-managed master, or a Redis Cluster.
//!
//! Only read commands are sent; the `read_only`, `redis_sentinel` and `redis_cluster`
//! integration tests audit that against every server's command statistics. What a missing key
//! means depends on its type: Redis deletes a list or sorted set when its last element goes, so
//! a missing one is an empty queue, `0` (an exact key that has never existed since start is
//! served as `0` too, but logged once and counted, because it is as likely a typo); Redis
//! never deletes a stream by itself, so a missing stream is an error for every stream measure.
//!
//! The files, from the configuration down to the wire:
//! - `config`: the `sources.<name>.redis` and `metrics[].redis` blocks, and their checks.
//! - `source`: [`RedisSource`], one poll: discovery, the plan, round one, round two, and the
//!   counters' readings that make rates and drain times ([`crate::sources::rates`]).
//! - `discovery`: which keys each pattern metric polls (`SCAN ... TYPE`, never `KEYS`).
//! - `plan`: the series and their round-one commands, made once per set of keys.
//! - `libraries`: the job-library presets (`{library: bullmq, queue: embed}`), as the generic
//!   targets each expands into.
//! - `reads`: per key type and measure, every pair written out: what a series sends and how
//!   its replies become a value (`timestamp`, `json_pointer`: reading a job's enqueue time).
//! - `topology`: one server, a Sentinel's master (`sentinel`) or a cluster (`cluster`); they
//!   only move batches, through `node` (send a batch, scan, error replies, per-node
//!   deadlines), `connect` (addresses, TLS, AUTH) and `wire` (a batch written as it was
//!   encoded once, replies read off the socket).
//! - `batch`: a round trip's deduplicated, encoded commands; `reply`: reading replies;
//!   `glob`: Redis's pattern syntax; `tracking`: the client-side-caching watch that wakes a
//!   poll when a key changes.

pub mod batch;
pub mod cluster;
pub mod config;
pub mod connect;
mod discovery;
pub mod glob;
mod json_pointer;
pub mod libraries;
pub mod node;
mod plan;
pub mod reads;
pub mod reply;
pub mod sentinel;
mod source;
mod timestamp;
pub mod topology;
pub mod tracking;
pub mod wire;

use self::config::{RedisMetric, RedisSourceConfig};
use crate::primitives::ConfigError;
use crate::sources::metric::MetricConfig;

pub use self::source::{Redis, RedisSource};

/// Checks metric `m` of a Redis source (`at` names it); `target` is its `redis:` block.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field.
pub fn validate_metric(
    _conn: &RedisSourceConfig,
    m: &MetricConfig,
    target: Option<&RedisMetric>,
    at: &str,
) -> Result<(), ConfigError> {
    match target {
        Some(t) => t.validate(&format!("{at}.redis"), m.measure, &m.labels),
        None => Ok(()),
    }
}
