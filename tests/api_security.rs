//! The API port as the kube-apiserver aggregator reaches it: HTTPS, front-proxy client
//! certificates, `X-Remote-*` identity, bearer tokens through TokenReview, SubjectAccessReview
//! per user and metric. Certificates are made here with rcgen; TokenReview, SubjectAccessReview
//! and the authentication ConfigMap come from the local Kubernetes API stub (no API server runs
//! here). Values come from the real Redis.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kube_stub::KubeStub;
use common::pki;
use common::{Cleanup, cmd, connect, prefix, redis_url};
use queue_metrics_adapter::app::{self, Running, Settings};
use queue_metrics_adapter::config::Config;
use queue_metrics_adapter::security::serving::CertSource;
use queue_metrics_adapter::security::setup::{ApiTls, AuthSettings, RequestHeaderFiles};
use rcgen::{CertifiedIssuer, KeyPair};
use serde_json::{Value, json};

type Ca = CertifiedIssuer<'static, KeyPair>;

/// Files of one test: server and front-proxy PKI, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("qma-sec-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        Dir(d)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        // Write then rename, as a Secret volume update does, so a reader never sees half a file.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &p).expect("rename");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Secure {
    running: Option<Running>,
    base: String,
    health: String,
    server_ca: Ca,
    proxy_ca: Ca,
    stub: KubeStub,
    dir: Dir,
    _clean: Cleanup,
}

/// Who the stub's SubjectAccessReview allows: alice and bob may read metric `q` in `team-a`;
/// as RBAC's `system:discovery` role, members of `system:authenticated` may `get` discovery
/// paths.
fn policy(spec: &Value) -> (bool, String) {
    let user = spec["user"].as_str().unwrap_or_default();
    let attrs = &spec["resourceAttributes"];
    let authenticated = spec["groups"]
        .as_array()
        .is_some_and(|g| g.iter().any(|g| g == "system:authenticated"));
    let discovery = &spec["nonResourceAttributes"];
    let allowed = (matches!(user, "alice" | "bob")
        && attrs["namespace"] == "team-a"
        && attrs["resource"] == "q"
        && attrs["verb"] == "list"
        && attrs["group"] == "external.metrics.k8s.io")
        || (authenticated
            && discovery["verb"] == "get"
            && discovery["path"]
                .as_str()
                .is_some_and(|p| p == "/apis" || p.starts_with("/apis/")));
    (
        allowed,
        if allowed {
            String::new()
        } else {
            "no RBAC binding".into()
        },
    )
}

async fn start(name: &str, from_cluster: bool) -> Secure {
    let dir = Dir::new(name);
    let server_ca = pki::ca("server-ca");
    let (cert, key) = pki::leaf(&server_ca, &["localhost", "127.0.0.1"]);
    let cert_file = dir.write("tls.crt", &cert);
    let key_file = dir.write("tls.key", &key);
    let proxy_ca = pki::ca("front-proxy-ca");
    let proxy_ca_file = dir.write("front-proxy-ca.crt", &proxy_ca.pem());

    let stub = KubeStub::start().await;
    stub.review_tokens(|token| {
        (token == "good-token").then(|| json!({"username": "bob", "groups": ["dev"]}))
    });
    stub.review_access(policy);
    if from_cluster {
        stub.apply(
            "configmaps",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
                "data": {
                    "requestheader-client-ca-file": proxy_ca.pem(),
                    "requestheader-allowed-names": "[\"front-proxy-client\"]",
                    "requestheader-username-headers": "[\"X-Remote-User\"]",
                    "requestheader-group-headers": "[\"X-Remote-Group\"]",
                    "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]"
                }
            }),
        );
    }

    let p = prefix(name);
    let mut conn = connect(&redis_url()).await;
    let _: i64 = cmd(&mut conn, &["RPUSH", &format!("{p}q"), "a", "b", "c"]).await;
    let yaml = format!(
        "poll_interval: 200ms\nkubernetes: {{kubeconfig: {}}}\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: q, source: jobs, measure: length, redis: {{type: list, key: \"{p}q\"}}}}\n",
        stub.kubeconfig().display(),
        redis_url()
    );
    let config = Config::from_yaml(&yaml, Path::new("test.yaml")).expect("config");
    let settings = Settings {
        health_listen: Some("127.0.0.1:0".parse().expect("addr")),
        api_tls: Some(ApiTls {
            cert: CertSource::Files {
                cert: cert_file,
                key: key_file,
            },
            reload_every: Duration::from_millis(100),
        }),
        auth: Some(AuthSettings {
            request_header: (!from_cluster).then(|| RequestHeaderFiles {
                client_ca: proxy_ca_file,
                allowed_names: vec!["front-proxy-client".into()],
            }),
            review_ttl: Duration::from_secs(10),
            configmap_refresh: Duration::from_millis(100),
        }),
        ..Settings::local()
    };
    let running = app::start(config, settings).await.expect("starts");
    let secure = Secure {
        base: format!("https://localhost:{}", running.api_addr.port()),
        health: format!("http://{}", running.health_addr),
        running: Some(running),
        server_ca,
        proxy_ca,
        stub,
        dir,
        _clean: Cleanup {
            url: redis_url(),
            prefix: p,
        },
    };
    secure.wait_ready().await;
    secure
}

impl Secure {
    /// An HTTPS client trusting the server CA, presenting `identity` (cert PEM, key PEM).
    fn client(&self, identity: Option<&(String, String)>) -> reqwest::Client {
        queue_metrics_adapter::tls::ensure_crypto_provider();
        let mut b = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.server_ca.pem().as_bytes()).expect("ca"),
            )
            .tls_info(true)
            .timeout(Duration::from_secs(10));
        if let Some((cert, key)) = identity {
            b = b.identity(
                reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity"),
            );
        }
        b.build().expect("client")
    }

    fn proxy(&self) -> reqwest::Client {
        self.client(Some(&pki::valid_client(
            &self.proxy_ca,
            "front-proxy-client",
        )))
    }

    async fn wait_ready(&self) {
        let http = common::http_client();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.health)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn metric(&self, namespace: &str) -> String {
        format!(
            "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/q",
            self.base
        )
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Sends the request; `Err` carries the transport error text (a refused handshake).
async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let r = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

#[tokio::test]
async fn only_the_front_proxy_or_a_reviewed_token_reads_metrics() {
    let s = start("authn", false).await;
    let anonymous = s.client(None);

    // No certificate, no token.
    let (status, body) = send(anonymous.get(s.metric("team-a")))
        .await
        .expect("served");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "Unauthorized");

    // Spoofed headers without the front proxy's certificate are ignored.
    let (status, _) = send(
        anonymous
            .get(s.metric("team-a"))
            .header("X-Remote-User", "alice")
            .header("X-Remote-Group", "system:masters"),
    )
    .await
    .expect("served");
    assert_eq!(status, 401);

    // A certificate from another CA, or an expired one, fails the handshake.
    let other_ca = pki::ca("other-ca");
    let stranger = s.client(Some(&pki::valid_client(&other_ca, "front-proxy-client")));
    assert!(
        send(
            stranger
                .get(s.metric("team-a"))
                .header("X-Remote-User", "alice")
        )
        .await
        .is_err()
    );
    let expired = pki::client(
        &s.proxy_ca,
        "front-proxy-client",
        time::Duration::days(-2),
        time::Duration::days(-1),
    );
    assert!(
        send(
            s.client(Some(&expired))
                .get(s.metric("team-a"))
                .header("X-Remote-User", "alice")
        )
        .await
        .is_err()
    );

    // The right CA but a common name that is not allowed: not the front proxy.
    let wrong_cn = s.client(Some(&pki::valid_client(&s.proxy_ca, "not-the-proxy")));
    let (status, _) = send(
        wrong_cn
            .get(s.metric("team-a"))
            .header("X-Remote-User", "alice"),
    )
    .await
    .expect("served");
    assert_eq!(status, 401);

    // The aggregator's own discovery and OpenAPI requests carry its user and no group: as
    // with k8s.io/apiserver it is in system:authenticated, which RBAC lets read discovery, and
    // the OpenAPI paths it polls are a 404 it skips, never a 401 or 403 it would log.
    let proxy = s.proxy();
    for (path, want) in [
        ("/apis", 200),
        ("/apis/external.metrics.k8s.io/v1beta1", 200),
        ("/openapi/v2", 404),
        ("/openapi/v3", 404),
    ] {
        let (status, body) = send(
            proxy
                .get(format!("{}{path}", s.base))
                .header("X-Remote-User", "system:kube-aggregator"),
        )
        .await
        .expect("served");
        assert_eq!(status, want, "{path}: {body}");
    }

    // The front proxy: its user is reviewed.
    let proxy = s.proxy();
    let (status, body) = send(
        proxy
            .get(s.metric("team-a"))
            .header("X-Remote-User", "alice"),
    )
    .await
    .expect("served");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["value"], "3");
    let (status, body) = send(
        proxy
            .get(s.metric("team-b"))
            .header("X-Remote-User", "alice"),
    )
    .await
    .expect("served");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert!(
        body["message"].as_str().unwrap_or_default().contains("cannot list resource \"q\" in API group \"external.metrics.k8s.io\" in the namespace \"team-b\""),
        "{body}"
    );
    let (status, _) = send(
        proxy
            .get(s.metric("team-a"))
            .header("X-Remote-User", "mallory"),
    )
    .await
    .expect("served");
    assert_eq!(status, 403);

    // The aggregator's own availability check: system:masters, no review needed.
    let reviews = s.stub.count("POST /apis/authorization.k8s.io");
    let (status, _) = send(
        proxy
            .get(format!("{}/apis/external.metrics.k8s.io/v1beta1", s.base))
            .header("X-Remote-User", "system:kube-aggregator")
            .header("X-Remote-Group", "system:masters"),
    )
    .await
    .expect("served");
    assert_eq!(status, 200);
    assert_eq!(s.stub.count("POST /apis/authorization.k8s.io"), reviews);

    // Answers are cached: the same question again asks the API server nothing new.
    for _ in 0..5 {
        let (status, _) = send(
            proxy
                .get(s.metric("team-a"))
                .header("X-Remote-User", "alice"),
        )
        .await
        .expect("served");
        assert_eq!(status, 200);
    }
    assert_eq!(s.stub.count("POST /apis/authorization.k8s.io"), reviews);

    // Bearer tokens go through a TokenReview.
    let (status, body) = send(anonymous.get(s.metric("team-a")).bearer_auth("good-token"))
        .await
        .expect("served");
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        anonymous
            .get(s.metric("team-a"))
            .bearer_auth("stolen-token"),
    )
    .await
    .expect("served");
    assert_eq!(status, 401);
    assert!(
        !body.to_string().contains("stolen-token"),
        "tokens never echoed: {body}"
    );

    // A spray of random tokens: each is a miss, but the reviews it can cause are bounded
    // (a burst, then a rate); the rest are 429 at once, and a known token still works.
    let before = s.stub.count("POST /apis/authentication.k8s.io");
    let started = std::time::Instant::now();
    let spray = (0..200).map(|i| {
        let client = anonymous.clone();
        let url = s.metric("team-a");
        tokio::spawn(async move {
            send(client.get(url).bearer_auth(format!("random-token-{i}")))
                .await
                .map(|(status, _)| status)
        })
    });
    let mut statuses = Vec::new();
    for call in spray.collect::<Vec<_>>() {
        statuses.push(call.await.expect("task").expect("served"));
    }
    let reviews = s.stub.count("POST /apis/authentication.k8s.io") - before;
    let bound = 20 + (started.elapsed().as_secs_f64() * 20.0).ceil() as usize;
    assert!(
        reviews <= bound,
        "{reviews} TokenReviews for 200 random tokens (bound {bound})"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "the rest are throttled: {statuses:?}"
    );
    let (status, _) = send(anonymous.get(s.metric("team-a")).bearer_auth("good-token"))
        .await
        .expect("served");
    assert_eq!(status, 200, "a reviewed token is answered from the cache");

    // Probes and /metrics need no identity, and /metrics shows no secret.
    let http = common::http_client();
    for path in ["/livez", "/readyz", "/healthz", "/metrics"] {
        let r = http
            .get(format!("{}{path}", s.health))
            .send()
            .await
            .expect("probe");
        assert_eq!(r.status(), 200, "{path}");
        let text = r.text().await.expect("body");
        for secret in ["good-token", "stolen-token", "PRIVATE KEY"] {
            assert!(!text.contains(secret), "{path} shows {secret}");
        }
    }
    s.stop().await;
}

/// The DER of the certificate the server presented.
async fn served_cert(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let r = client.get(url).send().await.expect("request");
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("tls info")
        .to_vec()
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart_or_dropped_connections() {
    let s = start("rotate", false).await;
    let discovery = format!("{}/apis", s.base);
    let kept = s.proxy();
    let first = served_cert(&kept, &discovery).await;

    let (cert, key) = pki::leaf(&s.server_ca, &["localhost", "127.0.0.1"]);
    s.dir.write("tls.key", &key);
    s.dir.write("tls.crt", &cert);
    let start = Instant::now();
    loop {
        let fresh = s.proxy();
        if served_cert(&fresh, &discovery).await != first {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new certificate not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the rotation is still open and served.
    let (status, _) = send(
        kept.get(s.metric("team-a"))
            .header("X-Remote-User", "alice"),
    )
    .await
    .expect("the old connection still works");
    assert_eq!(status, 200);

    // A broken pair (key of another certificate) is refused; the current one keeps serving.
    let (_, other_key) = pki::leaf(&s.server_ca, &["localhost"]);
    s.dir.write("tls.key", &other_key);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _) = send(
        s.proxy()
            .get(s.metric("team-a"))
            .header("X-Remote-User", "alice"),
    )
    .await
    .expect("still serving");
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn the_front_proxy_ca_can_come_from_the_cluster_configmap() {
    let s = start("configmap", true).await;
    let (status, body) = send(
        s.proxy()
            .get(s.metric("team-a"))
            .header("X-Remote-User", "alice"),
    )
    .await
    .expect("served");
    assert_eq!(status, 200, "{body}");

    // The cluster's front-proxy CA rotates: the adapter follows the ConfigMap.
    let new_ca = pki::ca("front-proxy-ca-2");
    s.stub.apply(
        "configmaps",
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
            "data": {
                "requestheader-client-ca-file": new_ca.pem(),
                "requestheader-allowed-names": "[\"front-proxy-client\"]"
            }
        }),
    );
    let new_proxy = s.client(Some(&pki::valid_client(&new_ca, "front-proxy-client")));
    let start = Instant::now();
    loop {
        if let Ok((200, _)) = send(
            new_proxy
                .get(s.metric("team-a"))
                .header("X-Remote-User", "alice"),
        )
        .await
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "new CA not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        send(
            s.proxy()
                .get(s.metric("team-a"))
                .header("X-Remote-User", "alice")
        )
        .await
        .is_err(),
        "the old CA is no longer trusted"
    );
    s.stop().await;
}

#[tokio::test]
async fn without_files_a_self_signed_certificate_names_the_service() {
    let stub = KubeStub::start().await;
    let yaml = format!(
        "kubernetes: {{kubeconfig: {}}}\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: q, source: jobs, measure: length, redis: {{type: list, key: \"qma-test:none\"}}}}\n",
        stub.kubeconfig().display(),
        redis_url()
    );
    let config = Config::from_yaml(&yaml, Path::new("test.yaml")).expect("config");
    let settings = Settings {
        api_tls: Some(ApiTls {
            cert: CertSource::SelfSigned {
                names: vec!["queue-metrics-adapter.monitoring.svc".into()],
            },
            reload_every: Duration::from_secs(10),
        }),
        ..Settings::local()
    };
    let running = app::start(config, settings).await.expect("starts");
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .expect("client");
    let der = served_cert(
        &client,
        &format!("https://127.0.0.1:{}/livez", running.api_addr.port()),
    )
    .await;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let names: Vec<String> = cert
        .subject_alternative_name()
        .expect("san")
        .expect("san present")
        .value
        .general_names
        .iter()
        .map(|n| format!("{n}"))
        .collect();
    for want in [
        "DNSName(queue-metrics-adapter.monitoring.svc)",
        "DNSName(localhost)",
        "IPAddress(7f:00:00:01)",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    running.shutdown().await;
}
