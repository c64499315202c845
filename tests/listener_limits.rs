//! Every HTTP listener is bounded: clients that send half a request head (plain and over TLS)
//! are closed after the header-read timeout while normal requests are answered, idle
//! connections are closed, connections beyond the cap are refused at accept, and requests
//! that are too large, or use another method than GET, get `metav1.Status` bodies.

mod common;

use std::time::{Duration, Instant};

use common::Adapter;
use queue_metrics_adapter::api::listener::Limits;
use queue_metrics_adapter::security::serving::CertSource;
use queue_metrics_adapter::security::setup::ApiTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = "sources:\n  jobs:\n    redis: {url: \"redis://127.0.0.1:6379/0\"}\nmetrics:\n  - {name: q, source: jobs, measure: length, redis: {type: list, key: \"qma-test:listener:never-written\"}}\n";

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    }
}

fn addr(a: &Adapter) -> std::net::SocketAddr {
    a.running.as_ref().expect("running").api_addr
}

/// Reads until the server closes the connection (or resets it), for up to `within`; returns
/// how long that took, or `None` if it stayed open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_request_heads_are_closed_after_the_timeout_while_a_normal_get_is_answered() {
    let a = Adapter::start_with(CONFIG, |s| s.limits = limits()).await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(addr(&a)).await.expect("connect");
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: adapter\r\n")
            .await
            .expect("half a head");
        slow.push(s);
    }
    let (status, _) = a.get_text("/livez").await;
    assert_eq!(
        status, 200,
        "a normal request is served while 300 clients dawdle"
    );
    for (i, s) in slow.iter_mut().enumerate() {
        let took = closed_within(s, Duration::from_secs(5)).await;
        assert!(took.is_some(), "slow connection {i} still open after 5 s");
    }
    // A new connection (a pooled one may have been closed as idle meanwhile: HTTP/1 keep-alive
    // waits are bounded by the header timeout too).
    let fresh = common::http_client();
    let r = fresh
        .get(format!("{}/livez", a.base))
        .send()
        .await
        .expect("served");
    assert_eq!(r.status(), 200);
    a.stop().await;
}

#[tokio::test]
async fn a_tls_client_that_never_finishes_its_handshake_is_closed() {
    let a = Adapter::start_with(CONFIG, |s| {
        s.limits = limits();
        s.api_tls = Some(ApiTls {
            cert: CertSource::SelfSigned { names: vec![] },
            reload_every: Duration::from_secs(10),
        });
    })
    .await;
    let mut silent = TcpStream::connect(addr(&a)).await.expect("connect");
    let took = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(took.is_some(), "a silent TLS client is not held open");
    a.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let a = Adapter::start_with(CONFIG, |s| {
        s.limits = Limits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(1),
            ..Limits::default()
        };
    })
    .await;
    let mut s = TcpStream::connect(addr(&a)).await.expect("connect");
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: adapter\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.expect("response");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "served first"
    );
    let took = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("closed once idle");
    assert!(
        took < Duration::from_secs(10),
        "closed by the 1 s idle timeout, not the 30 s header timeout: {took:?}"
    );
    a.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_until_slots_free_up() {
    let a = Adapter::start_with(CONFIG, |s| {
        s.limits = Limits {
            max_connections: 4,
            ..limits()
        };
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr(&a)).await.expect("connect"));
    }
    // Give the accept loop a moment to take all four.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(addr(&a))
        .await
        .expect("the kernel accepts");
    let took = closed_within(&mut fifth, Duration::from_millis(900)).await;
    assert!(took.is_some(), "the fifth connection is closed at once");
    // The four time out (header read timeout, 1 s); then the listener serves again.
    for s in &mut held {
        closed_within(s, Duration::from_secs(5))
            .await
            .expect("held connection times out");
    }
    let (status, _) = a.get_text("/livez").await;
    assert_eq!(status, 200);
    a.stop().await;
}

#[tokio::test]
async fn oversized_requests_and_other_methods_get_status_bodies() {
    let a = Adapter::start_with(CONFIG, |s| s.limits = limits()).await;
    let path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/q";
    let url = format!("{}{path}", a.base);
    let long = format!("{url}?labelSelector=a%3D{}", "x".repeat(20 * 1024));
    let cases = [
        (a.http.get(&long), 414, "RequestURITooLong"),
        (
            a.http.get(&url).header("x-padding", "y".repeat(70 * 1024)),
            431,
            "RequestHeaderFieldsTooLarge",
        ),
        (
            a.http.get(&url).body(vec![b'z'; 70 * 1024]),
            413,
            "RequestEntityTooLarge",
        ),
        (a.http.post(&url), 405, "MethodNotAllowed"),
    ];
    for (request, code, reason) in cases {
        let r = request.send().await.expect("answered");
        assert_eq!(r.status().as_u16(), code);
        let body: serde_json::Value = r.json().await.expect("a JSON body");
        assert_eq!(
            (
                body["kind"].as_str(),
                body["code"].as_u64(),
                body["reason"].as_str()
            ),
            (Some("Status"), Some(u64::from(code)), Some(reason)),
            "{body}"
        );
    }
    // A long selector under the URI limit is a 400 that quotes only its start.
    let selector = format!("a={} b", "x".repeat(8 * 1024));
    let (status, body) = a
        .get_json(&format!(
            "{path}?labelSelector={}",
            selector.replace(' ', "%20").replace('=', "%3D")
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.len() < 600, "{} bytes quoted", message.len());
    a.stop().await;
}
