//! HTTPS for the API port: the serving certificate (from files, reloaded when they change, or
//! self-signed at start), the optional client-certificate check against the front-proxy CA,
//! and the verified client identity each connection hands to the handlers (the accept loop is
//! [`crate::api::listener`]'s).
//!
//! A certificate or CA change builds a new rustls `ServerConfig` for the connections that come
//! after it; connections already open keep theirs, so a cert-manager rotation drops nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::file_watch::FileWatch;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files (e.g. a cert-manager Secret), re-read when their contents change.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// The leaf's private key.
        key: PathBuf,
    },
    /// A certificate made at start for these DNS names (plus `localhost` and 127.0.0.1):
    /// for an APIService with `insecureSkipTLSVerify`, never for a `caBundle`.
    SelfSigned {
        /// Extra DNS names, e.g. `queue-metrics-adapter.queue-metrics-adapter.svc`.
        names: Vec<String>,
    },
}

/// The client certificate a connection presented, verified against the front-proxy CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The verified certificate's subject common name; `None` when the client sent no
    /// certificate (a bearer-token caller, a probe).
    pub common_name: Option<String>,
    /// Whether a certificate was presented (and, since the handshake succeeded, verified).
    pub presented: bool,
}

/// The TLS state of the API port: current certificate and client CA, and the config built
/// from them.
pub struct ServingTls {
    parts: Mutex<Parts>,
    config: ArcSwap<rustls::ServerConfig>,
}

struct Parts {
    cert: Arc<CertifiedKey>,
    client_ca: Option<Arc<RootCertStore>>,
    use_: Use,
}

/// What a listener serves, which decides its client-certificate rule and ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// The API port: client certificates optional (tokens and probes bring none), verified
    /// when presented; HTTP/2 and HTTP/1.1.
    Api,
    /// The KEDA gRPC port: with a client CA, every client must present a certificate of it
    /// (mutual TLS); HTTP/2 only.
    Grpc,
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ServingTls {
    /// Loads or makes the certificate. `client_ca` (PEM) enables client certificates: optional
    /// for the handshake (tokens and probes need none), verified when presented.
    ///
    /// # Errors
    /// When the files cannot be read or parsed, the key does not match the certificate, or the
    /// CA holds no certificate.
    pub fn new(source: &CertSource, client_ca: Option<&[u8]>) -> anyhow::Result<Self> {
        Self::for_use(source, client_ca, Use::Api)
    }

    /// The same for `use_`: [`Use::Grpc`] requires client certificates when `client_ca` is
    /// given.
    ///
    /// # Errors
    /// As [`ServingTls::new`].
    pub fn for_use(
        source: &CertSource,
        client_ca: Option<&[u8]>,
        use_: Use,
    ) -> anyhow::Result<Self> {
        crate::tls::ensure_crypto_provider();
        let cert = match source {
            CertSource::Files { cert, key } => Arc::new(load_pair(cert, key)?),
            CertSource::SelfSigned { names } => Arc::new(self_signed(names)?),
        };
        let client_ca = client_ca.map(roots_from_pem).transpose()?;
        let config = build(&cert, client_ca.as_ref(), use_)?;
        Ok(ServingTls {
            parts: Mutex::new(Parts {
                cert,
                client_ca,
                use_,
            }),
            config: ArcSwap::from_pointee(config),
        })
    }

    /// Replaces the serving certificate for new connections.
    ///
    /// # Errors
    /// When a config cannot be built with it (the old one stays).
    pub fn set_cert(&self, cert: CertifiedKey) -> anyhow::Result<()> {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        let cert = Arc::new(cert);
        self.config.store(Arc::new(build(
            &cert,
            parts.client_ca.as_ref(),
            parts.use_,
        )?));
        parts.cert = cert;
        Ok(())
    }

    /// Replaces the client CA (PEM: the front proxy's, or KEDA's) for new connections.
    ///
    /// # Errors
    /// When the PEM holds no usable certificate (the old CA stays).
    pub fn set_client_ca(&self, pem: &[u8]) -> anyhow::Result<()> {
        let roots = roots_from_pem(pem)?;
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        self.config
            .store(Arc::new(build(&parts.cert, Some(&roots), parts.use_)?));
        parts.client_ca = Some(roots);
        Ok(())
    }

    /// The config for the next connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.load_full()
    }

    /// Re-reads `cert`/`key` every `every` and switches to them when their contents change and
    /// they parse as a matching pair. A half-written pair (cert updated, key not yet) fails to
    /// match and is retried on the next tick, the old pair serving meanwhile.
    pub fn spawn_reload(
        self: &Arc<Self>,
        cert: PathBuf,
        key: PathBuf,
        every: Duration,
        token: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let tls = self.clone();
        tracker.spawn(async move {
            let mut watch = FileWatch::new(vec![cert.clone(), key.clone()], every);
            while let Some(contents) = watch.changed(&token).await {
                match load_pair(&cert, &key).and_then(|c| tls.set_cert(c)) {
                    Ok(()) => {
                        tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                        watch.accept(contents);
                    }
                    Err(e) => tracing::warn!(
                        cert = %cert.display(),
                        error = %format!("{e:#}"),
                        "new serving certificate not usable yet; the previous one keeps serving"
                    ),
                }
            }
        });
    }
}

impl ServingTls {
    /// Re-reads the client CA file `ca` every `every` and switches to it when its contents
    /// change and it holds a certificate (a rotated CA Secret); until then the old CA checks.
    pub fn spawn_client_ca_reload(
        self: &Arc<Self>,
        ca: PathBuf,
        every: Duration,
        token: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        let tls = self.clone();
        tracker.spawn(async move {
            let mut watch = FileWatch::new(vec![ca.clone()], every);
            while let Some(contents) = watch.changed(&token).await {
                let read = std::fs::read(&ca)
                    .with_context(|| format!("reading {}", ca.display()))
                    .and_then(|pem| tls.set_client_ca(&pem));
                match read {
                    Ok(()) => {
                        tracing::info!(ca = %ca.display(), "client CA reloaded");
                        watch.accept(contents);
                    }
                    Err(e) => tracing::warn!(
                        ca = %ca.display(),
                        error = %format!("{e:#}"),
                        "new client CA not usable yet; the previous one keeps checking"
                    ),
                }
            }
        });
    }
}

fn build(
    cert: &Arc<CertifiedKey>,
    client_ca: Option<&Arc<RootCertStore>>,
    use_: Use,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider);
            let verifier = match use_ {
                Use::Api => verifier.allow_unauthenticated(),
                Use::Grpc => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().context("client CA")?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(FixedCert(cert.clone())));
    config.alpn_protocols = match use_ {
        Use::Api => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Use::Grpc => vec![b"h2".to_vec()],
    };
    Ok(config)
}

fn roots_from_pem(pem: &[u8]) -> anyhow::Result<Arc<RootCertStore>> {
    crate::tls::roots_from_pem(pem)
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("the client CA: {e}"))
}

/// Reads a PEM certificate chain and key, checking that they belong together.
///
/// # Errors
/// Unreadable or unparsable files, an unsupported key, or a key of another certificate.
pub fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS certificate {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "TLS certificate {}: no certificate in the file",
        cert.display()
    );
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("TLS private key {}", key.display()))?;
    certified(chain, &key_der)
        .with_context(|| format!("TLS pair {} / {}", cert.display(), key.display()))
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> anyhow::Result<CertifiedKey> {
    let signing = rustls::crypto::ring::sign::any_supported_type(key)
        .context("unsupported private key type")?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .context("the private key does not belong to the certificate")?;
    Ok(certified)
}

/// A self-signed certificate for `names`, `localhost` and 127.0.0.1, valid for a year.
fn self_signed(names: &[String]) -> anyhow::Result<CertifiedKey> {
    let mut sans: Vec<String> = names.to_vec();
    sans.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    let mut params =
        rcgen::CertificateParams::new(sans).context("self-signed certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "queue-metrics-adapter");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params.self_signed(&key).context("self-signing")?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!("self-signed key: {e}"))?;
    certified(vec![cert.der().clone()], &key_der)
}

/// The verified client certificate of a handshake.
/// The verified client certificate of a TLS connection, for the handlers.
pub(crate) fn peer_of(conn: &rustls::ServerConnection) -> PeerCertificate {
    let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
        return PeerCertificate::default();
    };
    let common_name = x509_parser::parse_x509_certificate(leaf.as_ref())
        .ok()
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_string))
        });
    PeerCertificate {
        common_name,
        presented: true,
    }
}
