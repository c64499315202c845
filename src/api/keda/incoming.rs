//! The connections the KEDA gRPC server is handed: at most `max_connections` at once, TLS
//! handshakes bounded by `header_read_timeout` and run off the accept loop, the serving
//! certificate and client CA of a [`ServingTls`] that follows their files (a cert-manager
//! rotation needs no restart), and each connection's client-certificate names, found once at
//! the handshake, attached to every request on it as a [`GrpcPeer`] for the access rules.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::listener::{Limits, Slots};
use crate::security::keda_clients::ClientNames;
use crate::security::serving::ServingTls;

/// Who is on the other end of a gRPC connection, in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct GrpcPeer {
    /// The verified client certificate's names; `None` without a certificate (plain gRPC,
    /// or TLS without a client CA).
    pub names: Option<ClientNames>,
}

/// One accepted connection, holding its place under the connection cap while it is open.
pub struct GrpcConnection {
    io: Io,
    peer: GrpcPeer,
    _slot: OwnedSemaphorePermit,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for GrpcConnection {
    type ConnectInfo = GrpcPeer;

    fn connect_info(&self) -> GrpcPeer {
        self.peer.clone()
    }
}

impl AsyncRead for GrpcConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for GrpcConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The stream of ready connections for `tonic`'s `serve_with_incoming_shutdown`: accepts on
/// `listener` until `shutdown`, within `limits`, over TLS when `tls` is given.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServingTls>>,
    limits: Limits,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> ReceiverStream<io::Result<GrpcConnection>> {
    let (tx, rx) = mpsc::channel(64);
    let mut slots = Slots::new(limits.max_connections, "gRPC");
    let handshakes = tracker.clone();
    tracker.spawn(async move {
        while let Some((tcp, remote, slot)) = slots.accept(&listener, &shutdown).await {
            let Some(tls) = &tls else {
                let connection = GrpcConnection {
                    io: Io::Plain(tcp),
                    peer: GrpcPeer::default(),
                    _slot: slot,
                };
                if tx.send(Ok(connection)).await.is_err() {
                    return;
                }
                continue;
            };
            // Handshakes run beside the loop: a client slow to finish one delays no other.
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            handshakes.spawn(async move {
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => {
                        let names = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|leaf| ClientNames::of_certificate(leaf.as_ref()));
                        let connection = GrpcConnection {
                            io: Io::Tls(Box::new(stream)),
                            peer: GrpcPeer { names },
                            _slot: slot,
                        };
                        let _ = tx.send(Ok(connection)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
