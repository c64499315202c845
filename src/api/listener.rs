//! The accept loop every HTTP listener runs (the API port, the health port, the KEDA
//! metrics-api on the API port): TLS where it is given, and the bounds that keep a slow, idle or
//! greedy client from holding the server.
//!
//! - A request head (and a TLS handshake) must arrive within `header_read_timeout`: a client
//!   that connects and says nothing, or sends half a request, is closed, as is an HTTP/1
//!   keep-alive connection waiting that long for its next request.
//! - A connection with no bytes either way for `idle_timeout` is closed (HTTP/2 too, which also
//!   pings, so a peer that vanished is found).
//! - At most `max_connections` are served at once; a connection beyond it is closed at accept,
//!   so slow clients cannot starve the listener of memory or file descriptors.
//! - A URI longer than `max_uri_bytes`, headers larger than `max_header_bytes` and a body larger
//!   than `max_body_bytes` are refused with `metav1.Status` bodies (414, 431, 413) before the
//!   service sees the request; the body the service gets is bounded as well.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::response::status_response;
use super::service::Service;
use crate::apimachinery::status::Status;
use crate::security::serving::{PeerCertificate, ServingTls, peer_of};

/// Bounds every HTTP listener applies. The defaults suit an API that answers small `GET`s from
/// memory to a few long-lived clients (kube-apiserver's aggregator, KEDA, Prometheus, kubelet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time for a TLS handshake and for a whole request head. Default 10 s.
    pub header_read_timeout: Duration,
    /// A connection idle this long is closed. Default 90 s, as kube-apiserver's own transport.
    pub idle_timeout: Duration,
    /// Connections served at once. Default 1,024.
    pub max_connections: usize,
    /// Largest request body. Default 64 KiB (the API takes no bodies).
    pub max_body_bytes: usize,
    /// Longest request URI, path and query. Default 16 KiB.
    pub max_uri_bytes: usize,
    /// Largest total of header names and values. Default 64 KiB (tokens, front-proxy groups).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 1024,
            max_body_bytes: 64 * 1024,
            max_uri_bytes: 16 * 1024,
            max_header_bytes: 64 * 1024,
        }
    }
}

impl Limits {
    /// Checks what a request's head says about its size.
    ///
    /// # Errors
    /// The `metav1.Status` to answer instead of serving it.
    pub fn check<B>(&self, request: &hyper::Request<B>) -> Result<(), Status> {
        let uri = request.uri();
        let uri = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
        if uri > self.max_uri_bytes {
            return Err(Status::failure(
                414,
                "RequestURITooLong",
                format!(
                    "the request URI is {uri} bytes long; the limit is {}",
                    self.max_uri_bytes
                ),
            ));
        }
        let headers: usize = request
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        if headers > self.max_header_bytes {
            return Err(Status::failure(
                431,
                "RequestHeaderFieldsTooLarge",
                format!(
                    "the request headers are {headers} bytes; the limit is {}",
                    self.max_header_bytes
                ),
            ));
        }
        let length = request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(length) = length
            && length > self.max_body_bytes as u64
        {
            return Err(too_large(self.max_body_bytes));
        }
        Ok(())
    }
}

fn too_large(limit: usize) -> Status {
    Status::failure(
        413,
        "RequestEntityTooLarge",
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}

/// Serves `service` on `listener` (over TLS when `tls` is given) within `limits` until
/// `shutdown` is cancelled; then open connections finish their requests and close.
///
/// Does not fail: a failed accept is logged and retried, so the loop only ends at shutdown.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    tls: Option<Arc<ServingTls>>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let mut slots = Slots::new(limits.max_connections, "HTTP");
    let connections = TaskTracker::new();
    while let Some((tcp, remote, slot)) = slots.accept(&listener, &shutdown).await {
        let service = service.clone();
        let tls = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config()));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    drive(tcp, PeerCertificate::default(), service, limits, shutdown).await;
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let peer = peer_of(stream.get_ref().1);
                            drive(stream, peer, service, limits, shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// The connection cap of one listener, and its accept step.
pub(crate) struct Slots {
    slots: Arc<Semaphore>,
    max: usize,
    refused: u64,
    what: &'static str,
}

impl Slots {
    /// At most `max` connections of the `what` listener (for log lines) at once.
    pub(crate) fn new(max: usize, what: &'static str) -> Self {
        Slots {
            slots: Arc::new(Semaphore::new(max)),
            max,
            refused: 0,
            what,
        }
    }

    /// The next connection with its place under the cap (held until it closes), with
    /// `TCP_NODELAY` set; `None` once `shutdown` is cancelled. A connection beyond the cap is
    /// closed at once; a failed accept is logged and retried.
    pub(crate) async fn accept(
        &mut self,
        listener: &TcpListener,
        shutdown: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        loop {
            let (tcp, remote) = tokio::select! {
                () = shutdown.cancelled() => return None,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(listener = self.what, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.refused += 1;
                // Once, then every 1,000th: a flood must not become a flood of log lines.
                if self.refused % 1000 == 1 {
                    tracing::warn!(listener = self.what, %remote, max_connections = self.max, refused = self.refused, "connection limit reached; closing new connections");
                }
                continue;
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%remote, error = %e, "TCP_NODELAY not set");
            }
            return Some((tcp, remote, slot));
        }
    }
}

/// How often a connection's idle deadline is looked at again.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Serves one connection until it ends, goes idle for too long, or the server shuts down.
async fn drive<S>(
    io: S,
    peer: PeerCertificate,
    service: Service,
    limits: Limits,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: io,
        activity: activity.clone(),
    };
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let service = service.clone();
            let peer = peer.clone();
            async move {
                Ok::<_, std::convert::Infallible>(answer(request, peer, service, limits).await)
            }
        });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_uri_bytes + limits.max_header_bytes + 4096).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout / 3))
        .keep_alive_timeout(limits.header_read_timeout)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    // Set once the connection was asked to close: it then has the header timeout to finish.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        // Until the first byte, a connection has only the header timeout: it may be a client
        // that connected and says nothing (which the HTTP/1-or-2 detection would wait for).
        let silent = !activity.has_read();
        let deadline = match closing {
            Some(asked) => asked + limits.header_read_timeout,
            None if silent => activity.start + limits.header_read_timeout,
            None => activity.last() + limits.idle_timeout,
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now());
            }
            // Woken at least every CHECK_EVERY, as the deadline moves with the traffic.
            () = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + CHECK_EVERY)) => {
                let now = tokio::time::Instant::now();
                if now < deadline {
                    continue;
                }
                if closing.is_some() || !activity.has_read() {
                    // Asked to close and still open, or silent from the start: drop it.
                    tracing::debug!("connection closed: silent, or slow to finish after being asked to close");
                    return;
                }
                if activity.last() + limits.idle_timeout <= now {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(now);
                }
            }
        }
    }
}

/// One request: refused by its size, or handed to the service with its body bounded.
async fn answer(
    mut request: hyper::Request<hyper::body::Incoming>,
    peer: PeerCertificate,
    service: Service,
    limits: Limits,
) -> Response {
    if let Err(status) = limits.check(&request) {
        return status_response(status);
    }
    // A connection without a client certificate adds nothing: the guard reads an absent
    // certificate as none, and the request then needs no extension map of its own.
    if peer.presented {
        request.extensions_mut().insert(peer);
    }
    // A request that says it has no body (a GET, as every metric request is) gets the empty
    // body, which needs no allocation; any other is bounded.
    let request = request.map(|body| {
        if hyper::body::Body::is_end_stream(&body) {
            axum::body::Body::empty()
        } else {
            axum::body::Body::new(http_body_util::Limited::new(body, limits.max_body_bytes))
        }
    });
    service.answer(request).await
}

/// When a connection last moved a byte, in milliseconds since it was accepted, and whether it
/// has sent any.
struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
    read_any: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            read_any: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn touch_read(&self) {
        self.read_any.store(true, Ordering::Relaxed);
        self.touch();
    }

    fn has_read(&self) -> bool {
        self.read_any.load(Ordering::Relaxed)
    }

    fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records when it last read or wrote a byte.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
