//! Model-server stand-ins for the `inference` source: HTTP servers on loopback serving
//! `/metrics` bodies (the fixtures of real vLLM/TGI/Triton/SGLang output, values changed between
//! polls), which a test can slow down, break, or make compute per request (counters that grow
//! with time) and which record every request; and the pods that point at them in the
//! Kubernetes API stub.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

type Render = Box<dyn Fn() -> String + Send + Sync>;

struct State {
    render: Render,
    status: u16,
    delay: Duration,
    scrapes: usize,
    /// Every request as `METHOD path?query`.
    requests: Vec<String>,
}

/// One stand-in server.
pub struct ModelServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl ModelServer {
    /// Serves `body` on `GET /metrics` of 127.0.0.1 at a free port.
    pub async fn start(body: &str) -> ModelServer {
        Self::serve(body, None).await
    }

    /// The same over HTTPS with the certificate and key given (PEM).
    pub async fn start_tls(body: &str, cert_pem: &str, key_pem: &str) -> ModelServer {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        queue_metrics_adapter::tls::ensure_crypto_provider();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("certificate");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("TLS config");
        Self::serve(
            body,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn serve(body: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> ModelServer {
        let body = body.to_string();
        let state = Arc::new(Mutex::new(State {
            render: Box::new(move || body.clone()),
            status: 200,
            delay: Duration::ZERO,
            scrapes: 0,
            requests: Vec::new(),
        }));
        let shared = state.clone();
        // One handler for every request, so a test sees each one the adapter made.
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method, uri: axum::http::Uri| {
                let shared = shared.clone();
                async move {
                    let (delay, status, body) = {
                        let mut s = shared.lock().expect("lock");
                        s.requests.push(format!("{method} {uri}"));
                        if method != axum::http::Method::GET || uri.path() != "/metrics" {
                            return (axum::http::StatusCode::NOT_FOUND, String::new());
                        }
                        s.scrapes += 1;
                        (s.delay, s.status, (s.render)())
                    };
                    tokio::time::sleep(delay).await;
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        body,
                    )
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        match tls {
            None => {
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let (acceptor, app) = (acceptor.clone(), app.clone());
                        tokio::spawn(async move {
                            // A client that refuses the certificate ends the handshake here.
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let service = hyper_util::service::TowerToHyperService::new(app);
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                        });
                    }
                });
            }
        }
        ModelServer { port, state }
    }

    /// Serves `body` from now on.
    pub fn set(&self, body: &str) {
        let body = body.to_string();
        self.state.lock().expect("lock").render = Box::new(move || body.clone());
    }

    /// Renders each answer with `render` (a counter that grows with time).
    pub fn render(&self, render: impl Fn() -> String + Send + Sync + 'static) {
        self.state.lock().expect("lock").render = Box::new(render);
    }

    /// Answers with `status` from now on.
    pub fn status(&self, status: u16) {
        self.state.lock().expect("lock").status = status;
    }

    /// Waits `delay` before each answer.
    pub fn delay(&self, delay: Duration) {
        self.state.lock().expect("lock").delay = delay;
    }

    /// Every request so far, `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("lock").requests.clone()
    }

    /// Scrapes answered so far.
    pub fn scrapes(&self) -> usize {
        self.state.lock().expect("lock").scrapes
    }
}

/// A pod of `owner` (kind, apiVersion, name) with `labels`, its model server's container port
/// `http` at `port` on 127.0.0.1, and `Ready` as given.
pub fn pod(
    namespace: &str,
    name: &str,
    owner: (&str, &str, &str),
    labels: Value,
    port: u16,
    ready: bool,
) -> Value {
    let (kind, api_version, owner_name) = owner;
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": api_version, "kind": kind, "name": owner_name,
                "uid": format!("uid-{namespace}-{owner_name}"), "controller": true
            }]
        },
        "spec": {"containers": [
            {"name": "server", "image": "vllm/vllm-openai:v0.10.2",
             "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}]}
        ]},
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    })
}
