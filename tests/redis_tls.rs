//! `rediss://` with a private CA and a password from a file, against a private TLS `redis-server`
//! whose certificates the test makes. A wrong password is a 503 that names the refusal and never
//! shows a password.

mod common;

use common::pki::{ca, leaf};
use common::{Adapter, RedisProcess, single_value};

#[tokio::test]
async fn rediss_with_a_private_ca_and_a_password_file_reads_values() {
    let ca = ca("qma-test-ca");
    let (cert_pem, key_pem) = leaf(&ca, &["localhost", "127.0.0.1"]);
    let ca_pem = ca.pem();
    let redis = RedisProcess::start_with(|dir| {
        std::fs::write(dir.join("ca.crt"), &ca_pem).expect("ca");
        std::fs::write(dir.join("server.crt"), &cert_pem).expect("cert");
        std::fs::write(dir.join("server.key"), &key_pem).expect("key");
        let f = |n: &str| dir.join(n).display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            "{port}".into(),
            "--tls-cert-file".into(),
            f("server.crt"),
            "--tls-key-file".into(),
            f("server.key"),
            "--tls-ca-cert-file".into(),
            f("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
            "--requirepass".into(),
            "tls-test-secret".into(),
        ]
    })
    .await;
    std::fs::write(redis.dir.join("password"), "tls-test-secret\n").expect("password file");
    std::fs::write(redis.dir.join("wrong"), "not-the-password\n").expect("password file");
    let ca = redis.dir.join("ca.crt").display().to_string();

    // Put data in through TLS as a producer would.
    let info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(
        format!("rediss://localhost:{}/0", redis.port).as_str(),
    )
    .expect("url");
    let settings = info
        .redis_settings()
        .clone()
        .set_password("tls-test-secret");
    let info = info.set_redis_settings(settings);
    let client = redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.clone().into_bytes()),
        },
    )
    .expect("tls client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("tls connect");
    let _: i64 = redis::cmd("LPUSH")
        .arg("jobs")
        .arg("a")
        .arg("b")
        .query_async(&mut c)
        .await
        .expect("lpush");

    let config = |password_file: &str| {
        format!(
            "poll_interval: 200ms\nsources:\n  secure:\n    redis: {{url: \"{}\", password_file: \"{}\", ca_file: \"{ca}\"}}\nmetrics:\n  - {{name: q, source: secure, measure: length, redis: {{type: list, key: jobs}}}}\n",
            common::with_protocol(&format!("rediss://localhost:{}/0", redis.port)),
            redis.dir.join(password_file).display()
        )
    };
    let a = Adapter::start(&config("password")).await;
    a.polls(1).await;
    let (status, body) = a.metric("q", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(single_value(&body), 2.0);
    a.stop().await;

    let a = Adapter::start(&config("wrong")).await;
    a.polls(1).await;
    let (status, body) = a.metric("q", None).await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    // RESP2 clients send AUTH ("authentication failed"); RESP3 clients HELLO with the password,
    // which Redis refuses as WRONGPASS.
    let refusal = if common::with_protocol("redis://x").contains("resp3") {
        "wrongpass"
    } else {
        "authentication failed"
    };
    assert!(message.to_lowercase().contains(refusal), "{message}");
    assert!(
        !message.contains("not-the-password") && !message.contains("tls-test-secret"),
        "{message}"
    );
    a.stop().await;
}
