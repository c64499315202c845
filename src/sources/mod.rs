//! Backends the adapter reads from, one module per kind, all behind [`Source`].
//!
//! A source knows how to read its backend once and turn the replies into [`Sample`]s. It knows
//! nothing of HTTP, the store or schedules: the poller calls [`Source::poll`] on an interval and
//! records the outcome. Sources only read; none sends a command that changes a queue.
//!
//! # Adding a source kind
//! 1. A folder `src/sources/<kind>/` with `mod.rs`, `config.rs` and what the reads need.
//! 2. In it, the connection block (`sources.<name>.<kind>`) and the metric block
//!    (`metrics[].<kind>`) as `Deserialize` types with `deny_unknown_fields`, and their checks
//!    (return [`crate::config::ConfigError::Invalid`] naming the field).
//! 3. A type implementing [`Source`] (one poll: read, never write) and a unit type implementing
//!    [`kind::SourceKind`]: its `NAME`, the two block types, the checks, and `build` from a
//!    [`kind::SourceSpec`] (name, connection, its metrics with their blocks, poll timeout).
//!    Secrets, password files, a namespace label, Kubernetes: the trait's defaulted methods.
//! 4. Here: `pub mod <kind>;` and one line `<kind> => Variant(<kind>::Kind),` in
//!    `registry::source_kinds!` below. Every match over kinds is generated from that list, so
//!    nothing else needs editing, and a kind missing a method does not compile.
//! 5. Tests beside it against the real backend (a private instance where the topology needs
//!    one), a line in the read-only test, and its section in the README.

pub mod age;
pub mod exposition;
pub mod kind;
pub mod kubernetes;
pub mod metric;
pub mod registry;

pub use metric::MetricConfig;

// The source kinds: a folder each, declared here and listed once below.
pub mod dcgm;
pub mod inference;
pub mod rabbitmq;
pub mod redis;

registry::source_kinds! {
    redis => Redis(redis::Redis),
    rabbitmq => RabbitMq(rabbitmq::RabbitMq),
    dcgm => Dcgm(dcgm::Dcgm),
    inference => Inference(inference::Inference),
}

use std::future::Future;

use crate::model::Sample;

/// One backend connection that can be polled (the counterpart of a KEDA scaler).
pub trait Source: Send + 'static {
    /// The source's configured name (`sources.<name>`).
    fn name(&self) -> &str;

    /// The kind (`redis`, ...), for telemetry labels.
    fn kind(&self) -> &'static str;

    /// Reads every metric of this source once.
    ///
    /// Per-series problems (a key of the wrong type, a bad timestamp) are inside the samples;
    /// an `Err` means nothing could be read this time and every metric of the source is
    /// unavailable until a poll succeeds.
    ///
    /// # Errors
    /// [`SourceError`] when the backend cannot be reached or answers nonsense.
    fn poll(&mut self) -> impl Future<Output = Result<Vec<Sample>, SourceError>> + Send;

    /// The signal this source's backend raises when its data changes, for a source that can be
    /// told (Redis `CLIENT TRACKING`); `None`: it is only polled.
    fn wake(&self) -> Option<crate::wake::WakeSignal> {
        None
    }
}

/// Why a whole poll failed. Messages never hold a password: targets are redacted URLs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The source's settings cannot be used (bad URL, unreadable CA file).
    #[error("configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// No connection could be made.
    #[error("cannot connect to {target}: {message}")]
    Connect {
        /// The redacted address.
        target: String,
        /// The client's error.
        message: String,
    },
    /// The connection failed mid-poll.
    #[error("reading from {target} failed: {message}")]
    Io {
        /// The redacted address.
        target: String,
        /// The client's error.
        message: String,
    },
    /// The server refused the poll as a whole (`NOAUTH`, `NOPERM` on `TIME`, `LOADING`).
    #[error("{target} refused the poll: {message}")]
    Refused {
        /// The redacted address.
        target: String,
        /// The server's error.
        message: String,
    },
    /// One node's part of a poll (a Cluster node, a sentinel) took longer than its own
    /// deadline; `target` names it (`cluster node 10.0.0.3:7001`).
    #[error("{target} did not answer within {after:?}")]
    Late {
        /// What did not answer.
        target: String,
        /// Its deadline.
        after: std::time::Duration,
    },
    /// The poll took longer than `poll_timeout`.
    #[error("the poll did not finish within {after:?}")]
    Timeout {
        /// The limit that was hit.
        after: std::time::Duration,
    },
    /// The backend answered something we cannot read.
    #[error("unexpected reply: {what}")]
    BadReply {
        /// What was wrong with it.
        what: String,
    },
}

/// A reqwest error as text without its URL (URLs can carry credentials), saying first whether
/// it timed out or could not connect: shared by the HTTP sources so their messages read alike.
pub(crate) fn http_error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        return text;
    };
    format!("{kind}: {text}")
}

/// Reads a source's `ca_file` (PEM), with the error every kind gives for one it cannot read.
///
/// # Errors
/// [`SourceError::Config`] naming the file.
pub(crate) fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|e| SourceError::Config {
        message: format!("ca_file {}: {e}", path.display()),
    })
}

/// Default limit on one HTTP answer from an upstream (a dcgm-exporter scrape, a Prometheus
/// query, a page of RabbitMQ's queue listing): 32 MiB, far above any real one.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Reads an HTTP response body of at most `limit` bytes: an upstream that answers more (an
/// exporter gone wrong, a listing far larger than expected) fails this read, with a message
/// naming the setting, instead of growing the adapter until it is killed for memory.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let too_large =
        || format!("the answer is larger than the limit of {limit} bytes (max_response_bytes)");
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http_error_text(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl SourceError {
    /// A short, bounded label for telemetry (`qma_poll_errors_total{kind=...}`).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Config { .. } => "config",
            SourceError::Connect { .. } => "connect",
            SourceError::Io { .. } => "io",
            SourceError::Refused { .. } => "refused",
            SourceError::Timeout { .. } | SourceError::Late { .. } => "timeout",
            SourceError::BadReply { .. } => "bad_reply",
        }
    }
}
