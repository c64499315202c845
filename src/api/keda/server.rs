//! The KEDA gRPC server: its listener, TLS (a rotating certificate and client CA, mutual TLS
//! when a client CA is given), HTTP/2 keepalive, and the scaler service with its stream cap and
//! `keda_clients` rules.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::incoming::incoming;
use super::scaler::KedaScaler;
use crate::api::listener::Limits;
use crate::security::keda_clients::KedaClients;
use crate::security::serving::{CertSource, ServingTls, Use};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// TLS for the KEDA gRPC server: a serving certificate, and optionally a CA that client
/// certificates must chain to (mutual TLS, KEDA's `tlsClientCert`/`tlsClientKey`). The files
/// are re-read every `reload_every` and used for new connections when they change.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// PEM certificate chain file.
    pub cert: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
    /// PEM CA file for client certificates, which every client must then present; `None`
    /// accepts clients without one.
    pub client_ca: Option<PathBuf>,
    /// How often the three files are checked for changes.
    pub reload_every: Duration,
}

impl GrpcTls {
    /// The files of `cert`/`key`, optionally checking clients against `client_ca`, re-read
    /// every minute.
    pub fn new(cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf>) -> Self {
        GrpcTls {
            cert,
            key,
            client_ca,
            reload_every: Duration::from_secs(60),
        }
    }

    fn serving(
        &self,
        token: &CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Arc<ServingTls>> {
        let ca = match &self.client_ca {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        };
        let source = CertSource::Files {
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        let tls = Arc::new(ServingTls::for_use(&source, ca.as_deref(), Use::Grpc)?);
        tls.spawn_reload(
            self.cert.clone(),
            self.key.clone(),
            self.reload_every,
            token.clone(),
            tracker,
        );
        if let Some(ca) = &self.client_ca {
            tls.spawn_client_ca_reload(ca.clone(), self.reload_every, token.clone(), tracker);
        }
        Ok(tls)
    }
}

/// What the gRPC server is started with.
pub struct Grpc {
    /// Where it listens.
    pub addr: SocketAddr,
    /// TLS; plaintext without.
    pub tls: Option<GrpcTls>,
    /// Open `StreamIsActive` streams allowed at once.
    pub max_streams: usize,
    /// Connection cap, handshake timeout, and the keepalive timing (idle / 3, header timeout).
    pub limits: Limits,
}

impl Grpc {
    /// Binds and serves until `token` is cancelled; returns the bound address.
    ///
    /// # Errors
    /// When the address cannot be bound, TLS files cannot be read, or `keda_clients` rules
    /// are set without mutual TLS (they name clients by their certificates).
    pub async fn start(
        self,
        store: Arc<Store>,
        telemetry: Telemetry,
        keda_clients: Arc<ArcSwap<KedaClients>>,
        token: &CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<SocketAddr> {
        let addr = self.addr;
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("binding the KEDA gRPC address {addr} (--grpc-listen, or `off`)")
        })?;
        let bound = listener.local_addr()?;
        let mutual = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if keda_clients.load().restricted() && !mutual {
            anyhow::bail!(
                "the config's keda_clients names clients by their certificates, so the gRPC \
                 server needs mutual TLS: --grpc-tls-cert, --grpc-tls-key and --grpc-client-ca"
            );
        }
        if !mutual && !bound.ip().is_loopback() {
            tracing::warn!(%bound, "the KEDA gRPC scaler accepts any caller, which can read every namespace: \
                serve it with mutual TLS (--grpc-tls-cert, --grpc-tls-key, --grpc-client-ca) as deploy/base does");
        }
        let tls = match &self.tls {
            Some(t) => Some(t.serving(token, tracker).context("gRPC TLS")?),
            None => None,
        };
        let service = KedaScaler::new(store, token.clone(), telemetry)
            .with_max_streams(self.max_streams)
            .with_clients(keda_clients)
            .into_service();
        // Pings find KEDA pods that vanished without closing their streams (their permits
        // come back), at the HTTP listeners' idle and header timeouts.
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(self.limits.idle_timeout / 3))
            .http2_keepalive_timeout(Some(self.limits.header_read_timeout));
        let incoming = incoming(listener, tls, self.limits, token.clone(), tracker);
        let stop = token.clone();
        tracker.spawn(async move {
            let served = builder
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.cancelled())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC server stopped with an error");
            }
        });
        Ok(bound)
    }
}
