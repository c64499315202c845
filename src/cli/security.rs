//! `serve`'s flags for how the API port is secured (README "Security").

use std::path::PathBuf;

use super::flag_values::positive_duration;
use crate::primitives::HumanDuration;
use crate::security::serving::CertSource;
use crate::security::setup::{ApiTls, AuthSettings, RequestHeaderFiles};

/// How the API port is secured (README "Security"). Defaults are for a cluster: HTTPS, the
/// front-proxy CA from kube-apiserver's ConfigMap, and a SubjectAccessReview per request.
#[derive(clap::Args, Debug)]
pub struct SecurityFlags {
    /// Serving certificate (PEM chain); re-read when it changes. Without it, a self-signed one.
    #[arg(long, env = "QMA_TLS_CERT_FILE", requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// Private key of --tls-cert-file.
    #[arg(long, env = "QMA_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// How often the certificate files (the API's, and the gRPC server's and its client CA) are
    /// checked for a new pair (greater than zero).
    #[arg(long, env = "QMA_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = positive_duration)]
    pub(crate) tls_reload_interval: HumanDuration,
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
    /// HTTPS for the API port, or `None` with `--insecure-http`.
    pub fn api_tls(&self) -> Option<ApiTls> {
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

    /// Authentication and authorization of metric requests, or `None` with `--disable-auth`.
    pub fn auth(&self) -> Option<AuthSettings> {
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
