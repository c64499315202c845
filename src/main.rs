//! The `queue-metrics-adapter` binary: CLI parsing and wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use queue_metrics_adapter::api::listener::Limits;
use queue_metrics_adapter::config::{Config, HumanDuration};
use queue_metrics_adapter::security::serving::CertSource;
use queue_metrics_adapter::security::setup::{ApiTls, AuthSettings, RequestHeaderFiles};
use queue_metrics_adapter::telemetry::{LogFormat, init_logging};
use queue_metrics_adapter::{app, check, shutdown};

/// mimalloc instead of glibc's malloc: the metric GET allocates and frees a few dozen small
/// blocks per request on whichever runtime thread serves it, and glibc's arenas spent about a
/// seventh of its CPU on them (`unlink_chunk`, `malloc_consolidate`, arena locks), and kept the
/// freed buffers of both runtime threads: RSS climbed 16 % over a 10-minute soak, −1.4 % with
/// mimalloc (BENCHMARKS.md). Built without transparent-huge-page advice (`no_thp`), which had
/// backed its arenas with 2 MiB pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// `serve`'s flags.
#[derive(clap::Args)]
struct ServeArgs {
    /// The YAML config file.
    #[arg(long, env = "QMA_CONFIG")]
    config: PathBuf,
    /// Address of the external metrics API (HTTPS; plain HTTP with --insecure-http), and of the
    /// KEDA metrics-api route.
    #[arg(long, default_value = "0.0.0.0:6443", env = "QMA_LISTEN")]
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
    #[arg(long, env = "QMA_SHUTDOWN_DELAY", default_value = "5s", value_parser = HumanDuration::parse)]
    shutdown_delay: HumanDuration,
    /// Show every series' value with all its labels in /metrics (qma_metric_value). /metrics
    /// needs no identity: any pod that reaches it then reads every team's queues and GPU
    /// workloads, past authorization. Only where a NetworkPolicy limits it to Prometheus.
    #[arg(long, env = "QMA_METRICS_SHOW_VALUES")]
    metrics_show_values: bool,
    /// How often the config file is checked for changes (0s: never reload).
    #[arg(long, env = "QMA_CONFIG_RELOAD_INTERVAL", default_value = "10s", value_parser = HumanDuration::parse)]
    config_reload_interval: HumanDuration,
    #[command(flatten)]
    security: SecurityFlags,
    #[command(flatten)]
    limits: LimitFlags,
    /// Limit on finishing in-flight work after that.
    #[arg(long, env = "QMA_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = HumanDuration::parse)]
    shutdown_timeout: HumanDuration,
}

#[derive(Subcommand)]
enum Command {
    /// Poll the configured sources and serve their metrics until SIGTERM.
    Serve(Box<ServeArgs>),
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
        Command::Serve(args) => {
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
            } = *args;
            let cfg = Config::load(&config)?;
            let settings = app::Settings {
                listen,
                health_listen,
                grpc_listen: grpc_listen.0,
                grpc_tls: grpc_tls_cert
                    .zip(grpc_tls_key)
                    .map(|(cert, key)| app::GrpcTls {
                        reload_every: security.tls_reload_interval.0,
                        ..app::GrpcTls::new(cert, key, grpc_client_ca)
                    }),
                shutdown_delay: shutdown_delay.0,
                shutdown_timeout: shutdown_timeout.0,
                api_tls: security.api_tls(),
                auth: security.auth(),
                config_path: (!config_reload_interval.0.is_zero()).then(|| config.clone()),
                config_reload_interval: config_reload_interval.0,
                limits: limits.limits(),
                grpc_max_streams: limits.grpc_max_streams as usize,
                metrics_show_values,
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

/// The bounds every HTTP listener keeps (README "Limits"); the defaults are
/// [`Limits::default`]'s.
#[derive(clap::Args, Debug)]
struct LimitFlags {
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
    #[arg(long, env = "QMA_GRPC_MAX_STREAMS", default_value = "4096", value_parser = clap::value_parser!(u32).range(1..))]
    grpc_max_streams: u32,
}

impl LimitFlags {
    fn limits(&self) -> Limits {
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

/// How the API port is secured (README "Security"). Defaults are for a cluster: HTTPS, the
/// front-proxy CA from kube-apiserver's ConfigMap, and a SubjectAccessReview per request.
#[derive(clap::Args, Debug)]
struct SecurityFlags {
    /// Serving certificate (PEM chain); re-read when it changes. Without it, a self-signed one.
    #[arg(long, env = "QMA_TLS_CERT_FILE", requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Private key of --tls-cert-file.
    #[arg(long, env = "QMA_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// How often the certificate files (the API's, and the gRPC server's and its client CA) are
    /// checked for a new pair (greater than zero).
    #[arg(long, env = "QMA_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = positive_duration)]
    tls_reload_interval: HumanDuration,
    /// The Service name, for the self-signed certificate's `<service>.<namespace>.svc` name.
    #[arg(
        long,
        default_value = "queue-metrics-adapter",
        env = "QMA_SERVICE_NAME"
    )]
    service_name: String,
    /// The Service namespace (the pod's namespace), for the same.
    #[arg(long, default_value = "queue-metrics-adapter", env = "POD_NAMESPACE")]
    service_namespace: String,
    /// CA of the front proxy's client certificate. Without it, read from
    /// kube-system/extension-apiserver-authentication (and refreshed).
    #[arg(long, env = "QMA_REQUESTHEADER_CLIENT_CA_FILE")]
    requestheader_client_ca_file: Option<PathBuf>,
    /// Common names the front proxy's certificate may have (comma-separated; empty: any).
    #[arg(
        long,
        env = "QMA_REQUESTHEADER_ALLOWED_NAMES",
        value_delimiter = ',',
        requires = "requestheader_client_ca_file"
    )]
    requestheader_allowed_names: Vec<String>,
    /// How long TokenReview and SubjectAccessReview answers are reused.
    #[arg(long, env = "QMA_REVIEW_CACHE_TTL", default_value = "10s", value_parser = HumanDuration::parse)]
    review_cache_ttl: HumanDuration,
    /// How often the cluster's front-proxy settings are re-read (greater than zero).
    #[arg(long, env = "QMA_REQUESTHEADER_REFRESH_INTERVAL", default_value = "1m", value_parser = positive_duration)]
    requestheader_refresh_interval: HumanDuration,
    /// Serve the API over plain HTTP. Local development only.
    #[arg(long, env = "QMA_INSECURE_HTTP", conflicts_with_all = ["tls_cert_file"])]
    insecure_http: bool,
    /// Serve metrics to anyone, without authentication or authorization. Local development only.
    #[arg(long, env = "QMA_DISABLE_AUTH")]
    disable_auth: bool,
}

impl SecurityFlags {
    fn api_tls(&self) -> Option<ApiTls> {
        if self.insecure_http {
            return None;
        }
        let cert = match (&self.tls_cert_file, &self.tls_private_key_file) {
            (Some(cert), Some(key)) => CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => CertSource::SelfSigned {
                names: vec![
                    format!("{}.{}.svc", self.service_name, self.service_namespace),
                    format!(
                        "{}.{}.svc.cluster.local",
                        self.service_name, self.service_namespace
                    ),
                ],
            },
        };
        Some(ApiTls {
            cert,
            reload_every: self.tls_reload_interval.0,
        })
    }

    fn auth(&self) -> Option<AuthSettings> {
        if self.disable_auth {
            return None;
        }
        Some(AuthSettings {
            request_header: self.requestheader_client_ca_file.clone().map(|client_ca| {
                RequestHeaderFiles {
                    client_ca,
                    allowed_names: self
                        .requestheader_allowed_names
                        .iter()
                        .filter(|n| !n.is_empty())
                        .cloned()
                        .collect(),
                }
            }),
            review_ttl: self.review_cache_ttl.0,
            configmap_refresh: self.requestheader_refresh_interval.0,
        })
    }
}

/// A duration that must not be zero: a refresh every 0 s would spin (tokio's interval panics on
/// it, which would leave certificate or CA rotation silently dead), so it is refused at start.
fn positive_duration(text: &str) -> Result<HumanDuration, String> {
    let d = HumanDuration::parse(text)?;
    if d.0.is_zero() {
        return Err(format!(
            "{text:?} must be greater than zero (it is how often something is re-read)"
        ));
    }
    Ok(d)
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
            Command::Check { .. } => panic!("serve"),
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
