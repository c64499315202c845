//! `serve`'s flags for the bounds every listener keeps (README "Limits").

use super::flag_values::positive_duration;
use crate::api::listener::Limits;
use crate::primitives::HumanDuration;

/// The bounds every HTTP listener keeps (README "Limits"); the defaults are
/// [`Limits::default`]'s.
#[derive(clap::Args, Debug)]
pub struct LimitFlags {
    /// Time for a TLS handshake and a whole request head; also the longest an HTTP/1
    /// keep-alive connection waits for its next request.
    #[arg(long, env = "QMA_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    header_read_timeout: HumanDuration,
    /// A connection that moves no byte for this long is closed.
    #[arg(long, env = "QMA_IDLE_TIMEOUT", default_value = "90s", value_parser = positive_duration)]
    idle_timeout: HumanDuration,
    /// Connections served at once per listener; more are closed at accept.
    #[arg(long, env = "QMA_MAX_CONNECTIONS", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "QMA_MAX_REQUEST_BODY_BYTES", default_value = "65536")]
    max_request_body_bytes: usize,
    /// Longest request URI in bytes (414 beyond).
    #[arg(long, env = "QMA_MAX_URI_BYTES", default_value = "16384")]
    max_uri_bytes: usize,
    /// Largest total of request header names and values in bytes (431 beyond).
    #[arg(long, env = "QMA_MAX_HEADER_BYTES", default_value = "65536")]
    max_header_bytes: usize,
    /// KEDA StreamIsActive streams open at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "QMA_GRPC_MAX_STREAMS", default_value_t = crate::api::keda::scaler::DEFAULT_MAX_STREAMS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) grpc_max_streams: u32,
}

impl LimitFlags {
    /// The listeners' bounds these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: self.header_read_timeout.0,
            idle_timeout: self.idle_timeout.0,
            max_connections: self.max_connections as usize,
            max_body_bytes: self.max_request_body_bytes,
            max_uri_bytes: self.max_uri_bytes,
            max_header_bytes: self.max_header_bytes,
        }
    }
}
