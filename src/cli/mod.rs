//! The command line: `serve`, `check` and `discover`, their flags (each also read from a `QMA_...`
//! environment variable), and the settings they make. `main.rs` parses it and runs.

pub mod discover;
pub mod flag_values;
pub mod limits;
pub mod security;
pub mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

pub use serve::ServeArgs;

/// The command line.
#[derive(Parser)]
#[command(
    version,
    about = "Queue depth and age for Kubernetes autoscaling (external metrics API)",
    long_about = None
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "QMA_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Poll the configured sources and serve their metrics until SIGTERM.
    Serve(Box<ServeArgs>),
    /// Validate the config, poll every source once and print a table; exit 1 if any metric failed.
    Check {
        /// The YAML config file.
        #[arg(long, env = "QMA_CONFIG")]
        config: PathBuf,
    },
    /// Find the job-library queues on Redis servers and RabbitMQ brokers (read-only) and print
    /// a config that serves them; a summary goes to standard error.
    Discover(discover::DiscoverArgs),
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::security::serving::CertSource;

    #[test]
    fn every_serve_flag_reads_an_environment_variable_named_after_it() {
        use clap::CommandFactory as _;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let mut checked = 0;
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["help", "log-format"].contains(&long) {
                continue;
            }
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} reads no environment variable"));
            let want = if long == "service-namespace" {
                "POD_NAMESPACE".to_string()
            } else {
                format!("QMA_{}", long.replace('-', "_").to_uppercase())
            };
            assert_eq!(env.to_str(), Some(want.as_str()), "--{long}");
            checked += 1;
        }
        assert!(checked >= 25, "{checked}");
    }

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
        let Command::Serve(args) = cli.command else {
            panic!("serve");
        };
        let ServeArgs {
            grpc_listen,
            shutdown_delay,
            grpc_client_ca,
            ..
        } = *args;
        assert!(grpc_listen.0.is_none());
        assert_eq!(shutdown_delay.0, std::time::Duration::from_secs(1));
        assert!(grpc_client_ca.is_some());
        let cli = Cli::try_parse_from(["queue-metrics-adapter", "serve", "--config", "c.yaml"])
            .expect("defaults");
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let grpc_listen = args.grpc_listen;
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

    #[test]
    fn zero_refresh_intervals_are_refused_at_start_naming_the_flag() {
        for flag in ["--tls-reload-interval", "--requestheader-refresh-interval"] {
            let err = Cli::try_parse_from([
                "queue-metrics-adapter",
                "serve",
                "--config",
                "c",
                flag,
                "0s",
            ])
            .map(|_| ())
            .expect_err("0s is refused");
            let text = err.to_string();
            assert!(
                text.contains(flag) && text.contains("greater than zero"),
                "{text}"
            );
            assert_eq!(err.exit_code(), 2, "{text}");
            assert!(
                Cli::try_parse_from([
                    "queue-metrics-adapter",
                    "serve",
                    "--config",
                    "c",
                    flag,
                    "1s"
                ])
                .is_ok()
            );
        }
    }

    fn serve(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec!["queue-metrics-adapter", "serve", "--config", "c.yaml"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv)?;
        match cli.command {
            Command::Serve(args) => Ok(*args),
            Command::Check { .. } | Command::Discover(_) => panic!("serve"),
        }
    }

    #[test]
    fn security_defaults_to_https_with_authentication() {
        let args = serve(&[]).expect("defaults");
        assert_eq!(args.listen, "0.0.0.0:6443".parse().expect("addr"));
        let Some(tls) = args.security.api_tls() else {
            panic!("HTTPS by default")
        };
        let CertSource::SelfSigned { names } = tls.cert else {
            panic!("self-signed without files")
        };
        assert!(names.contains(&"queue-metrics-adapter.queue-metrics-adapter.svc".to_string()));
        let auth = args.security.auth().expect("authentication by default");
        assert!(
            auth.request_header.is_none(),
            "front-proxy CA from the cluster"
        );

        let args = serve(&[
            "--tls-cert-file",
            "c.pem",
            "--tls-private-key-file",
            "k.pem",
            "--requestheader-client-ca-file",
            "ca.pem",
            "--requestheader-allowed-names",
            "front-proxy-client,aggregator",
        ])
        .expect("files");
        let files = args
            .security
            .auth()
            .and_then(|a| a.request_header)
            .expect("files");
        assert_eq!(
            files.allowed_names,
            vec!["front-proxy-client", "aggregator"]
        );

        let args = serve(&["--insecure-http", "--disable-auth"]).expect("dev mode");
        assert!(args.security.api_tls().is_none() && args.security.auth().is_none());
        assert!(
            serve(&["--tls-cert-file", "c.pem"]).is_err(),
            "cert needs key"
        );
        assert!(
            serve(&[
                "--insecure-http",
                "--tls-cert-file",
                "c",
                "--tls-private-key-file",
                "k"
            ])
            .is_err(),
            "plain HTTP with a certificate is a mistake"
        );
    }
}
