//! What HTTPS and front-proxy authentication cost on the metric GET, against plain HTTP measured
//! in the same run, over loopback TCP with reqwest:
//! - a new connection per request (TCP + TLS handshake + GET), as a client without keep-alive;
//! - a request on a kept-alive connection, as the aggregator sends them;
//! - the same with the front-proxy client certificate and the guard on (`system:masters`, which
//!   needs no SubjectAccessReview, so no API server is involved).
//!
//! `make bench` (or `cargo bench --bench tls`); results in BENCHMARKS.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use queue_metrics_adapter::api::listener::{Limits, serve};
use queue_metrics_adapter::api::service::Service;
use queue_metrics_adapter::api::{AppState, Routes};
use queue_metrics_adapter::security::Guard;
use queue_metrics_adapter::security::identity::RequestHeader;
use queue_metrics_adapter::security::reviews::Reviews;
use queue_metrics_adapter::security::serving::{CertSource, ServingTls};
use tokio_util::sync::CancellationToken;

// The tests' certificate helpers (rcgen only), shared rather than copied.
#[path = "../tests/common/pki.rs"]
mod pki;
mod support;

const PATH: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/embedding_queue_length";

fn state(guard: Option<Arc<Guard>>) -> AppState {
    let store = support::polled_store(
        &["embedding_queue_length"],
        vec![support::sample(
            "embedding_queue_length",
            &[("queue", "embeddings")],
            1234.0,
        )],
    );
    support::app_state(store, guard)
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

fn bench(c: &mut Criterion) {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("qma-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let server_ca = pki::ca("server-ca");
    let proxy_ca = pki::ca("front-proxy-ca");
    let (cert, key) = pki::leaf(&server_ca, &["localhost"]);
    std::fs::write(dir.join("tls.crt"), &cert).expect("write");
    std::fs::write(dir.join("tls.key"), &key).expect("write");
    let source = CertSource::Files {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let (proxy_cert, proxy_key) = pki::valid_client(&proxy_ca, "front-proxy-client");

    let (plain, tls, guarded) = rt.block_on(async {
        let (l, plain) = listener().await;
        let service = Service::new(state(None), Routes::All);
        tokio::spawn(serve(
            l,
            service,
            None,
            Limits::default(),
            CancellationToken::new(),
        ));

        let (l, tls) = listener().await;
        let serving = Arc::new(ServingTls::new(&source, None).expect("tls"));
        let service = Service::new(state(None), Routes::All);
        tokio::spawn(serve(
            l,
            service,
            Some(serving),
            Limits::default(),
            CancellationToken::new(),
        ));

        let (l, guarded) = listener().await;
        let serving =
            Arc::new(ServingTls::new(&source, Some(proxy_ca.pem().as_bytes())).expect("tls"));
        // A client that is never dialled: system:masters needs no review.
        let kube_config = kube::Config::new("https://127.0.0.1:1".parse().expect("uri"));
        let client = kube::Client::try_from(kube_config).expect("client");
        let guard = Arc::new(Guard::new(
            RequestHeader {
                allowed_names: vec!["front-proxy-client".into()],
                ..RequestHeader::default()
            },
            Reviews::new(client, Duration::from_secs(10)),
        ));
        let service = Service::new(state(Some(guard)), Routes::All);
        tokio::spawn(serve(
            l,
            service,
            Some(serving),
            Limits::default(),
            CancellationToken::new(),
        ));
        (plain, tls, guarded)
    });

    let trusting = |identity: bool, keep_alive: bool| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).expect("ca"),
            )
            .resolve("localhost", "127.0.0.1:0".parse().expect("addr"));
        if identity {
            b = b.identity(
                reqwest::Identity::from_pem(format!("{proxy_cert}{proxy_key}").as_bytes())
                    .expect("identity"),
            );
        }
        if !keep_alive {
            b = b.pool_max_idle_per_host(0);
        }
        b.build().expect("client")
    };
    let cases = [
        (
            "plain_http_baseline",
            format!("http://{plain}{PATH}"),
            false,
        ),
        (
            "https",
            format!("https://localhost:{}{PATH}", tls.port()),
            false,
        ),
        (
            "https_front_proxy_guarded",
            format!("https://localhost:{}{PATH}", guarded.port()),
            true,
        ),
    ];
    for keep_alive in [false, true] {
        let name = if keep_alive {
            "metric_get_kept_alive"
        } else {
            "metric_get_new_connection"
        };
        let mut group = c.benchmark_group(name);
        for (label, url, identity) in &cases {
            let client = trusting(*identity, keep_alive);
            group.bench_function(*label, |b| {
                b.to_async(&rt).iter(|| async {
                    let r = client
                        .get(url)
                        .header("X-Remote-User", "system:kube-aggregator")
                        .header("X-Remote-Group", "system:masters")
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(r.status(), 200);
                    r.bytes().await.expect("body")
                });
            });
        }
        group.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
