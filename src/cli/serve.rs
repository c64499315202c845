//! `serve`'s flags, and the settings they make.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::flag_values::{OptionalAddr, parse_optional_addr};
use super::limits::LimitFlags;
use super::security::SecurityFlags;
use crate::app::{GrpcTls, Settings};
use crate::primitives::HumanDuration;

/// `serve`'s flags.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The YAML config file.
    #[arg(long, env = "QMA_CONFIG")]
    pub(crate) config: PathBuf,
    /// Address of the external metrics API (HTTPS; plain HTTP with --insecure-http), and of the
    /// KEDA metrics-api route.
    #[arg(long, default_value = "0.0.0.0:6443", env = "QMA_LISTEN")]
    pub(crate) listen: SocketAddr,
    /// Separate address for /livez, /readyz, /healthz and /metrics (default: on --listen).
    #[arg(long, env = "QMA_HEALTH_LISTEN")]
    pub(crate) health_listen: Option<SocketAddr>,
    /// Address of the KEDA external scaler (gRPC), or `off`.
    #[arg(long, default_value = "0.0.0.0:9090", env = "QMA_GRPC_LISTEN", value_parser = parse_optional_addr)]
    pub(crate) grpc_listen: OptionalAddr,
    /// PEM certificate for the gRPC server (TLS); with --grpc-tls-key.
    #[arg(long, env = "QMA_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub(crate) grpc_tls_cert: Option<PathBuf>,
    /// PEM private key for the gRPC server.
    #[arg(long, env = "QMA_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub(crate) grpc_tls_key: Option<PathBuf>,
    /// PEM CA that gRPC client certificates must chain to (mutual TLS).
    #[arg(long, env = "QMA_GRPC_CLIENT_CA", requires = "grpc_tls_cert")]
    pub(crate) grpc_client_ca: Option<PathBuf>,
    /// After SIGTERM, how long /readyz answers 503 before the servers stop.
    #[arg(long, env = "QMA_SHUTDOWN_DELAY", default_value = "5s", value_parser = HumanDuration::parse)]
    pub(crate) shutdown_delay: HumanDuration,
    /// Show every series' value with all its labels in /metrics (qma_metric_value). /metrics
    /// needs no identity: any pod that reaches it then reads every team's queues and GPU
    /// workloads, past authorization. Only where a NetworkPolicy limits it to Prometheus.
    #[arg(long, env = "QMA_METRICS_SHOW_VALUES")]
    pub(crate) metrics_show_values: bool,
    /// How often the config file is checked for changes (0s: never reload).
    #[arg(long, env = "QMA_CONFIG_RELOAD_INTERVAL", default_value = "10s", value_parser = HumanDuration::parse)]
    pub(crate) config_reload_interval: HumanDuration,
    #[command(flatten)]
    pub(crate) security: SecurityFlags,
    #[command(flatten)]
    pub(crate) limits: LimitFlags,
    /// Limit on finishing in-flight work after that.
    #[arg(long, env = "QMA_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = HumanDuration::parse)]
    pub(crate) shutdown_timeout: HumanDuration,
}

impl ServeArgs {
    /// The config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// What `serve` runs with.
    pub fn settings(self) -> Settings {
        let ServeArgs {
            config,
            listen,
            security,
            health_listen,
            grpc_listen,
            grpc_tls_cert,
            grpc_tls_key,
            grpc_client_ca,
            shutdown_delay,
            shutdown_timeout,
            config_reload_interval,
            limits,
            metrics_show_values,
        } = self;
        Settings {
            listen,
            health_listen,
            grpc_listen: grpc_listen.0,
            grpc_tls: grpc_tls_cert.zip(grpc_tls_key).map(|(cert, key)| GrpcTls {
                reload_every: security.tls_reload_interval.0,
                ..GrpcTls::new(cert, key, grpc_client_ca)
            }),
            shutdown_delay: shutdown_delay.0,
            shutdown_timeout: shutdown_timeout.0,
            api_tls: security.api_tls(),
            auth: security.auth(),
            config_path: (!config_reload_interval.0.is_zero()).then_some(config),
            config_reload_interval: config_reload_interval.0,
            limits: limits.limits(),
            grpc_max_streams: limits.grpc_max_streams as usize,
            metrics_show_values,
        }
    }
}
