//! Putting the API port's security together at start: the serving certificate (and its reload),
//! the front-proxy CA and allowed names (from files, or from kube-apiserver's
//! `extension-apiserver-authentication` ConfigMap, refreshed), and the [`Guard`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Guard;
use super::identity::{AUTHENTICATION_CONFIGMAP, RequestHeader};
use super::reviews::Reviews;
use super::serving::{CertSource, ServingTls};

/// HTTPS for the API port.
#[derive(Debug, Clone)]
pub struct ApiTls {
    /// Where the serving certificate comes from.
    pub cert: CertSource,
    /// How often certificate files are checked for a new pair.
    pub reload_every: Duration,
}

/// Authentication and authorization of metric requests.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The front-proxy CA and allowed names from files; `None` reads them from the cluster.
    pub request_header: Option<RequestHeaderFiles>,
    /// How long TokenReview and SubjectAccessReview answers are reused.
    pub review_ttl: Duration,
    /// How often the cluster's authentication ConfigMap is re-read.
    pub configmap_refresh: Duration,
}

/// `--requestheader-client-ca-file` and `--requestheader-allowed-names`.
#[derive(Debug, Clone)]
pub struct RequestHeaderFiles {
    /// PEM CA that signs the front proxy's client certificate.
    pub client_ca: PathBuf,
    /// Allowed common names (empty: any certificate from the CA).
    pub allowed_names: Vec<String>,
}

/// The security pieces the API server needs.
pub struct Secured {
    /// TLS, when the port serves HTTPS.
    pub tls: Option<Arc<ServingTls>>,
    /// The guard, when authentication is on.
    pub guard: Option<Arc<Guard>>,
}

/// Builds TLS and the guard, and starts the tasks that keep them current.
///
/// # Errors
/// When the certificate or CA files cannot be used, or the cluster's authentication ConfigMap
/// cannot be read at start (with authentication on and no CA file given).
pub async fn secure(
    tls: Option<&ApiTls>,
    auth: Option<&AuthSettings>,
    client: Option<kube::Client>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Secured> {
    // What the cluster's ConfigMap said at start, when it is the source: the refresh compares
    // against it instead of applying the same settings again.
    let mut from_cluster: Option<(RequestHeader, String)> = None;
    let (request_header, client_ca) = match auth {
        None => (None, None),
        Some(a) => match &a.request_header {
            Some(files) => {
                let pem = std::fs::read(&files.client_ca).with_context(|| {
                    format!(
                        "--requestheader-client-ca-file {}",
                        files.client_ca.display()
                    )
                })?;
                let header = RequestHeader {
                    allowed_names: files.allowed_names.clone(),
                    ..RequestHeader::default()
                };
                (Some(header), Some(pem))
            }
            None => {
                let client = client
                    .clone()
                    .context("authentication needs a Kubernetes client")?;
                let (header, ca) = read_configmap(&client).await?;
                from_cluster = Some((header.clone(), ca.clone()));
                (Some(header), Some(ca.into_bytes()))
            }
        },
    };
    let serving = match tls {
        Some(t) => {
            let serving =
                Arc::new(ServingTls::new(&t.cert, client_ca.as_deref()).context("API TLS")?);
            if let CertSource::Files { cert, key } = &t.cert {
                serving.spawn_reload(
                    cert.clone(),
                    key.clone(),
                    t.reload_every,
                    token.clone(),
                    tracker,
                );
            }
            Some(serving)
        }
        None => None,
    };
    let guard = match (auth, request_header) {
        (Some(a), Some(header)) => {
            let client = client.context("authentication needs a Kubernetes client")?;
            if serving.is_none() {
                tracing::warn!(
                    "authentication is on over plain HTTP: front-proxy certificates cannot be seen, only bearer tokens work"
                );
            }
            let guard = Arc::new(Guard::new(
                header,
                Reviews::new(client.clone(), a.review_ttl),
            ));
            if let Some(current) = from_cluster {
                spawn_configmap_refresh(
                    client,
                    current,
                    guard.clone(),
                    serving.clone(),
                    a.configmap_refresh,
                    token.clone(),
                    tracker,
                );
            }
            Some(guard)
        }
        _ => None,
    };
    Ok(Secured {
        tls: serving,
        guard,
    })
}

async fn read_configmap(client: &kube::Client) -> anyhow::Result<(RequestHeader, String)> {
    let (namespace, name) = AUTHENTICATION_CONFIGMAP;
    let map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| {
            format!(
                "reading ConfigMap {namespace}/{name} (the front-proxy CA); give \
                 --requestheader-client-ca-file instead, or --disable-auth for local development"
            )
        })?;
    let data = map.data.unwrap_or_default();
    RequestHeader::from_configmap(&data)
        .map_err(|e| anyhow::anyhow!("ConfigMap {namespace}/{name} {e}"))
}

/// Re-reads the ConfigMap every `every`, applying a changed CA and settings; a failed read or a
/// bad new value keeps the current ones (logged).
fn spawn_configmap_refresh(
    client: kube::Client,
    current: (RequestHeader, String),
    guard: Arc<Guard>,
    tls: Option<Arc<ServingTls>>,
    every: Duration,
    token: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        let mut last = current;
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (header, ca) = match read_configmap(&client).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "front-proxy settings not refreshed; keeping the current ones");
                    continue;
                }
            };
            if last.0 == header && last.1 == ca {
                continue;
            }
            if let Some(tls) = &tls
                && let Err(e) = tls.set_client_ca(ca.as_bytes())
            {
                tracing::warn!(error = %format!("{e:#}"), "new front-proxy CA not usable; keeping the current one");
                continue;
            }
            guard.set_request_header(header.clone());
            tracing::info!("front-proxy settings refreshed from the cluster");
            last = (header, ca);
        }
    });
}
