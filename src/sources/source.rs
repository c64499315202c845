//! What every source kind implements and returns: the [`Source`] trait the poller drives and
//! the [`SourceError`] a whole poll fails with. It names no kind.

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
