//! `https://` management and `amqps://` with a private CA, against a private RabbitMQ node whose
//! certificates the test makes; wrong credentials are 503s that never show a password.

mod common;

use std::time::{Duration, Instant};

use common::Adapter;
use common::pki::{ca, leaf};
use common::rabbit::RabbitNode;

#[tokio::test]
async fn https_management_and_amqps_with_a_private_ca() {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    // SAFETY: set before the adapter (the only reader) starts; nothing removes it.
    unsafe { std::env::set_var("QMA_TEST_RABBIT_PASSWORD", "guest") };
    let ca = ca("qma-test-ca");
    let (cert_pem, key_pem) = leaf(&ca, &["localhost"]);

    let node = RabbitNode::start_with(|dir, tls_port| {
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca");
        std::fs::write(dir.join("cert.pem"), &cert_pem).expect("cert");
        std::fs::write(dir.join("key.pem"), &key_pem).expect("key");
        let f = |n: &str| dir.join(n).display().to_string();
        let conf = format!(
            "listeners.ssl.default = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {ca}\nssl_options.certfile = {cert}\nssl_options.keyfile = {key}\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\nmanagement.ssl.cacertfile = {ca}\nmanagement.ssl.certfile = {cert}\nmanagement.ssl.keyfile = {key}\n",
            ca = f("ca.pem"),
            cert = f("cert.pem"),
            key = f("key.pem"),
        );
        (conf, true)
    })
    .await;
    let ca_file = node.dir().join("ca.pem").display().to_string();
    std::fs::write(node.dir().join("wrong"), "not-the-password").expect("wrong password file");
    let wrong = node.dir().join("wrong").display().to_string();
    let config = format!(
        "poll_interval: 250ms\nsources:\n  https:\n    rabbitmq: {{management_url: \"{mgmt}\", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD, ca_file: \"{ca_file}\"}}\n  amqps:\n    rabbitmq: {{amqp_url: \"amqps://localhost:{tls}/%2f\", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD, ca_file: \"{ca_file}\"}}\n  bad-https:\n    rabbitmq: {{management_url: \"{mgmt}\", username: guest, password_file: \"{wrong}\", ca_file: \"{ca_file}\"}}\n  bad-amqps:\n    rabbitmq: {{amqp_url: \"amqps://localhost:{tls}/%2f\", username: guest, password_file: \"{wrong}\", ca_file: \"{ca_file}\"}}\nmetrics:\n  - {{name: via-https, source: https, measure: consumers, rabbitmq: {{queue: missing}}}}\n  - {{name: via-amqps, source: amqps, measure: ready, rabbitmq: {{queue: missing}}}}\n  - {{name: bad-https, source: bad-https, measure: ready, rabbitmq: {{queue: missing}}}}\n  - {{name: bad-amqps, source: bad-amqps, measure: ready, rabbitmq: {{queue: missing}}}}\n",
        mgmt = node.management_url(),
        tls = node.tls_port,
    );
    let a = Adapter::start(&config).await;
    let message =
        |body: &serde_json::Value| body["message"].as_str().unwrap_or_default().to_string();
    // Reaching the broker over TLS is shown by the broker's own answer: the queue is not there.
    let start = Instant::now();
    loop {
        let (_, https) = a.metric("via-https", None).await;
        let (_, amqps) = a.metric("via-amqps", None).await;
        if message(&https).contains("\"missing\" not found")
            && message(&amqps).contains("\"missing\" not found")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "TLS reads: {https} / {amqps}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = a.metric("bad-https", None).await;
    assert_eq!(status, 503);
    assert!(message(&body).contains("401"), "{body}");
    assert!(!message(&body).contains("not-the-password"), "{body}");
    let (status, body) = a.metric("bad-amqps", None).await;
    assert_eq!(status, 503);
    assert!(!message(&body).contains("not-the-password"), "{body}");
    let (_, metrics) = a.get_text("/metrics").await;
    assert!(!metrics.contains("not-the-password"));
    a.stop().await;
}
