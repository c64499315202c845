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

/// `cluster` with `tls: true`: a one-node Redis Cluster that speaks only TLS (clients and the
/// cluster bus), owning all 16384 slots, with a private CA and a password file. The slot map it
/// gives names its TLS port, and every node connection uses the CA.
#[tokio::test]
async fn a_tls_only_cluster_is_read_with_tls_true_and_the_ca_file() {
    use std::process::{Command, Stdio};

    let ca = ca("qma-test-cluster-ca");
    let (cert_pem, key_pem) = leaf(&ca, &["localhost", "127.0.0.1"]);
    let port = common::redis_topology::free_port();
    let dir = std::env::temp_dir().join(format!("qma-tls-cluster-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, pem) in [
        ("ca.crt", ca.pem()),
        ("server.crt", cert_pem),
        ("server.key", key_pem),
    ] {
        std::fs::write(dir.join(name), pem).expect("pem");
    }
    std::fs::write(dir.join("password"), "cluster-secret\n").expect("password");
    let f = |n: &str| dir.join(n).display().to_string();
    /// Kills the server and removes its directory when the test ends, passed or not.
    struct Stop(std::process::Child, std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cluster",
            "yes",
            "--cluster-enabled",
            "yes",
            "--tls-auth-clients",
            "no",
        ])
        .args([
            "--tls-cert-file",
            &f("server.crt"),
            "--tls-key-file",
            &f("server.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &f("ca.crt"),
            "--requirepass",
            "cluster-secret",
        ])
        .args(["--save", "", "--appendonly", "no", "--dir", &f("")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let _stop = Stop(server, dir.clone());
    let info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(
        format!("rediss://localhost:{port}/0").as_str(),
    )
    .expect("url");
    let settings = info.redis_settings().clone().set_password("cluster-secret");
    let client = redis::Client::build_with_tls(
        info.set_redis_settings(settings),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.pem().into_bytes()),
        },
    )
    .expect("tls client");
    let mut c = None;
    for _ in 0..100 {
        if let Ok(conn) = client.get_multiplexed_async_connection().await {
            c = Some(conn);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut c = c.expect("the TLS cluster node starts");
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut c)
        .await
        .expect("ADDSLOTSRANGE");
    common::redis_topology::until(
        "cluster_state:ok",
        std::time::Duration::from_secs(10),
        || {
            let mut c = c.clone();
            async move {
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            }
        },
    )
    .await;
    let _: i64 = redis::cmd("RPUSH")
        .arg("{embed}:wait")
        .arg("a")
        .arg("b")
        .arg("c")
        .query_async(&mut c)
        .await
        .expect("RPUSH");

    let a = Adapter::start(&format!(
        "poll_interval: 200ms\nsources:\n  secure:\n    redis: {{cluster: {{nodes: [\"localhost:{port}\"]}}, tls: true, ca_file: \"{}\", password_file: \"{}\"}}\nmetrics:\n  - {{name: q, source: secure, measure: length, redis: {{type: list, key: \"{{embed}}:wait\"}}}}\n",
        f("ca.crt"),
        f("password")
    ))
    .await;
    a.polls(1).await;
    let (status, body) = a.metric("q", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(single_value(&body), 3.0);
    a.stop().await;
}
