//! What `serve` runs with: listen addresses, TLS, authentication, limits, shutdown timing,
//! reload. The command line makes one ([`crate::cli::ServeArgs::settings`]); tests and the
//! demo start from [`Settings::local`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::api::keda::server::GrpcTls;
use crate::security::setup::{ApiTls, AuthSettings};

/// Where to listen and how to stop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The external metrics API (and, without `health_listen`, the probes and `/metrics`).
    pub listen: SocketAddr,
    /// A separate port for probes and `/metrics`, if wanted.
    pub health_listen: Option<SocketAddr>,
    /// The KEDA external scaler (gRPC), if wanted.
    pub grpc_listen: Option<SocketAddr>,
    /// TLS for the gRPC server (KEDA's `enableTLS`/`caCert`/`tlsClientCert`); plaintext without.
    pub grpc_tls: Option<GrpcTls>,
    /// How long readiness reports 503 before the servers stop, so endpoints drop the pod first.
    pub shutdown_delay: Duration,
    /// Limit on waiting for in-flight requests and poll loops after that.
    pub shutdown_timeout: Duration,
    /// HTTPS for the API port; `None` serves plain HTTP (`--insecure-http`, local development).
    pub api_tls: Option<ApiTls>,
    /// Authentication and authorization of metric requests; `None` turns them off
    /// (`--disable-auth`, local development).
    pub auth: Option<AuthSettings>,
    /// The config file to watch for changes (a mounted ConfigMap); `None`: no reload.
    pub config_path: Option<PathBuf>,
    /// How often that file is checked.
    pub config_reload_interval: Duration,
    /// The bounds every HTTP listener keeps (timeouts, connections, sizes).
    pub limits: crate::api::listener::Limits,
    /// Open `StreamIsActive` streams the gRPC server allows at once.
    pub grpc_max_streams: usize,
    /// Show every series' value with its labels in `/metrics` (`qma_metric_value`). Off by
    /// default: `/metrics` is unauthenticated.
    pub metrics_show_values: bool,
}

impl Settings {
    /// Loopback on ephemeral ports, plain HTTP without authentication, no gRPC, no reload, no
    /// shutdown delay: for tests, the demo and local tools, never for a cluster. Override
    /// fields with struct update syntax.
    pub fn local() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            health_listen: None,
            grpc_listen: None,
            grpc_tls: None,
            shutdown_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(5),
            api_tls: None,
            auth: None,
            config_path: None,
            config_reload_interval: Duration::from_secs(10),
            limits: crate::api::listener::Limits::default(),
            grpc_max_streams: crate::api::keda::scaler::DEFAULT_MAX_STREAMS,
            metrics_show_values: false,
        }
    }
}
