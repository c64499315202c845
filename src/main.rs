//! The `queue-metrics-adapter` binary: CLI parsing and wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use queue_metrics_adapter::config::{Config, HumanDuration};
use queue_metrics_adapter::telemetry::{LogFormat, init_logging};
use queue_metrics_adapter::{app, check, shutdown};

#[derive(Parser)]
#[command(
    version,
    about = "Queue depth and age for Kubernetes autoscaling (external metrics API)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "QMA_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Poll the configured sources and serve their metrics until SIGTERM.
    Serve {
        /// The YAML config file.
        #[arg(long, env = "QMA_CONFIG")]
        config: PathBuf,
        /// Address of the external metrics API (plain HTTP).
        #[arg(long, default_value = "0.0.0.0:8080", env = "QMA_LISTEN")]
        listen: SocketAddr,
        /// Separate address for /livez, /readyz, /healthz and /metrics (default: on --listen).
        #[arg(long, env = "QMA_HEALTH_LISTEN")]
        health_listen: Option<SocketAddr>,
        /// Address of the KEDA external scaler (gRPC), or `off`.
        #[arg(long, default_value = "0.0.0.0:9090", env = "QMA_GRPC_LISTEN", value_parser = parse_optional_addr)]
        grpc_listen: OptionalAddr,
        /// PEM certificate for the gRPC server (TLS); with --grpc-tls-key.
        #[arg(long, env = "QMA_GRPC_TLS_CERT", requires = "grpc_tls_key")]
        grpc_tls_cert: Option<PathBuf>,
        /// PEM private key for the gRPC server.
        #[arg(long, env = "QMA_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
        grpc_tls_key: Option<PathBuf>,
        /// PEM CA that gRPC client certificates must chain to (mutual TLS).
        #[arg(long, env = "QMA_GRPC_CLIENT_CA", requires = "grpc_tls_cert")]
        grpc_client_ca: Option<PathBuf>,
        /// After SIGTERM, how long /readyz answers 503 before the servers stop.
        #[arg(long, default_value = "5s", value_parser = HumanDuration::parse)]
        shutdown_delay: HumanDuration,
        /// Limit on finishing in-flight work after that.
        #[arg(long, default_value = "10s", value_parser = HumanDuration::parse)]
        shutdown_timeout: HumanDuration,
    },
    /// Validate the config, poll every source once and print a table; exit 1 if any metric failed.
    Check {
        /// The YAML config file.
        #[arg(long, env = "QMA_CONFIG")]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    queue_metrics_adapter::tls::ensure_crypto_provider();
    init_logging(cli.log_format);
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            config,
            listen,
            health_listen,
            grpc_listen,
            grpc_tls_cert,
            grpc_tls_key,
            grpc_client_ca,
            shutdown_delay,
            shutdown_timeout,
        } => {
            let cfg = Config::load(&config)?;
            let settings = app::Settings {
                listen,
                health_listen,
                grpc_listen: grpc_listen.0,
                grpc_tls: grpc_tls_cert
                    .zip(grpc_tls_key)
                    .map(|(cert, key)| app::GrpcTls {
                        cert,
                        key,
                        client_ca: grpc_client_ca,
                    }),
                shutdown_delay: shutdown_delay.0,
                shutdown_timeout: shutdown_timeout.0,
            };
            let running = app::start(cfg, settings).await.context("starting")?;
            shutdown::signal().await;
            running.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            let report = check::run(&cfg).await?;
            print!("{}", report.table);
            Ok(if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy)]
struct OptionalAddr(Option<SocketAddr>);

/// `off`, or a socket address.
fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    if text == "off" {
        return Ok(OptionalAddr(None));
    }
    text.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{text:?}: {e} (an address such as 0.0.0.0:9090, or off)"))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn every_serve_flag_parses_into_its_type() {
        let cli = Cli::try_parse_from([
            "queue-metrics-adapter",
            "serve",
            "--config",
            "c.yaml",
            "--listen",
            "127.0.0.1:1",
            "--health-listen",
            "127.0.0.1:2",
            "--grpc-listen",
            "off",
            "--grpc-tls-cert",
            "c.pem",
            "--grpc-tls-key",
            "k.pem",
            "--grpc-client-ca",
            "ca.pem",
            "--shutdown-delay",
            "1s",
        ])
        .expect("parses");
        let Command::Serve {
            grpc_listen,
            shutdown_delay,
            grpc_client_ca,
            ..
        } = cli.command
        else {
            panic!("serve");
        };
        assert!(grpc_listen.0.is_none());
        assert_eq!(shutdown_delay.0, std::time::Duration::from_secs(1));
        assert!(grpc_client_ca.is_some());
        let cli = Cli::try_parse_from(["queue-metrics-adapter", "serve", "--config", "c.yaml"])
            .expect("defaults");
        let Command::Serve { grpc_listen, .. } = cli.command else {
            panic!("serve")
        };
        assert_eq!(grpc_listen.0, Some("0.0.0.0:9090".parse().expect("addr")));
        assert!(
            Cli::try_parse_from([
                "queue-metrics-adapter",
                "serve",
                "--config",
                "c",
                "--grpc-listen",
                "nowhere"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "queue-metrics-adapter",
                "serve",
                "--config",
                "c",
                "--grpc-tls-key",
                "k"
            ])
            .is_err(),
            "key needs cert"
        );
    }
}
