//! The `nats` source against private `nats-server`s started by the tests (`common::nats`), for
//! what the shared server cannot show: a restart, TLS with a client certificate, user/password
//! and NKey logins, JetStream reached through another account's API prefix, and a user allowed
//! only the read-only API, which proves that polls send nothing else and leave every stream,
//! consumer and message as it was. (`.creds` files are not exercised: making the operator,
//! account and user JWTs needs `nsc`, which cannot be installed here.)

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use common::nats::{
    PrivateNats, account_prefix_config, error_of, js_api, nkey_config, nkey_user,
    read_only_user_config, scratch_dir, tls_config,
};
use common::paced::served;
use common::{Adapter, value_is};
use futures_util::StreamExt as _;

/// A work-queue stream `JOBS` on `jobs.>` with the pull consumer `workers` and `n` messages.
async fn fill(client: async_nats::Client, n: usize) -> consumer::Consumer<consumer::pull::Config> {
    let js = jetstream::new(client);
    let s = js
        .create_stream(stream::Config {
            name: "JOBS".into(),
            subjects: vec!["jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("create stream");
    for i in 0..n {
        js.publish(format!("jobs.{i}"), format!("job {i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    s.create_consumer(consumer::pull::Config {
        durable_name: Some("workers".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    })
    .await
    .expect("consumer")
}

fn metrics() -> &'static str {
    "metrics:
  - {name: lag, source: js, measure: lag, nats: {stream: JOBS, consumer: workers}}
  - {name: age, source: js, measure: oldest_unprocessed_age_seconds, nats: {stream: JOBS, consumer: workers}}
  - {name: length, source: js, measure: length, nats: {stream: JOBS}}
"
}

#[tokio::test]
async fn a_restarted_server_is_an_error_while_down_never_zero_then_served_again() {
    let mut server = PrivateNats::start("");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let _workers = fill(client.clone(), 3).await;
    let config = format!(
        "poll_interval: 200ms\npoll_timeout: 1s\nsources:\n  js:\n    nats: {{servers: [\"{}\"]}}\n{}",
        server.url(),
        metrics()
    );
    let a = Adapter::start(&config).await;
    a.wait_for("lag", None, Duration::from_secs(10), value_is(3.0))
        .await;
    server.stop();
    // Down: the HPA holds (an error), it is never told 0.
    let e = error_of(&a, "lag", "").await;
    assert!(!e.starts_with("200"), "{e}");
    for _ in 0..5 {
        assert!(served(&a, "length").await.is_err());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.restart();
    // JetStream kept the stream on disk: the same counts, once the client has reconnected.
    a.wait_for("lag", None, Duration::from_secs(20), value_is(3.0))
        .await;
    a.wait_for("length", None, Duration::from_secs(10), value_is(3.0))
        .await;
    assert!(served(&a, "age").await.expect("age") > 0.0);
    a.stop().await;
}

#[tokio::test]
async fn tls_with_a_client_certificate() {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let dir = scratch_dir("tls");
    let (tls, ca, cert, key) = tls_config(&dir);
    let server = PrivateNats::start_in(dir, &tls);
    let url = format!("tls://127.0.0.1:{}", server.port);
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.clone())
        .add_client_certificate(cert.clone(), key.clone())
        .require_tls(true)
        .connect(&url)
        .await
        .expect("test client connects with its certificate");
    let _workers = fill(client, 2).await;
    let config = format!(
        "poll_interval: 200ms\nsources:\n  js:\n    nats: {{servers: [\"{url}\"], ca_file: \"{}\", cert_file: \"{}\", key_file: \"{}\"}}\n  nocert:\n    nats: {{servers: [\"{url}\"], ca_file: \"{}\"}}\n{}  - {{name: nocert_lag, source: nocert, measure: lag, nats: {{stream: JOBS, consumer: workers}}}}\n",
        ca.display(),
        cert.display(),
        key.display(),
        ca.display(),
        metrics()
    );
    let a = Adapter::start(&config).await;
    a.wait_for("lag", None, Duration::from_secs(10), value_is(2.0))
        .await;
    // Without a client certificate the server refuses the connection: an error, not 0.
    error_of(&a, "nocert_lag", "cannot connect").await;
    a.stop().await;
}

#[tokio::test]
async fn user_password_nkey_and_token_logins() {
    let users = "authorization {\n  users: [ { user: admin, password: admin-pass } ]\n}\n";
    let server = PrivateNats::start(users);
    let client =
        async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin-pass".into())
            .connect(server.url())
            .await
            .expect("connect");
    let _workers = fill(client, 4).await;
    let dir = scratch_dir("secrets");
    let password = dir.join("password");
    std::fs::write(&password, "admin-pass\n").expect("password file");
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "not-the-password").expect("password file");
    let config = format!(
        "poll_interval: 200ms\nsources:\n  js:\n    nats: {{servers: [\"{url}\"], username: admin, password_file: \"{}\"}}\n  wrong:\n    nats: {{servers: [\"{url}\"], username: admin, password_file: \"{}\"}}\n{}  - {{name: wrong_lag, source: wrong, measure: lag, nats: {{stream: JOBS, consumer: workers}}}}\n",
        password.display(),
        wrong.display(),
        metrics(),
        url = server.url(),
    );
    let a = Adapter::start(&config).await;
    a.wait_for("lag", None, Duration::from_secs(10), value_is(4.0))
        .await;
    let e = error_of(&a, "wrong_lag", "authorization violation").await;
    assert!(!e.contains("not-the-password"), "{e}");
    a.stop().await;

    // NKey: the seed signs the server's nonce; only the public key is in the server's config.
    let (seed, public) = nkey_user();
    let server = PrivateNats::start(&nkey_config(&public));
    let client = async_nats::ConnectOptions::with_nkey(seed.clone())
        .connect(server.url())
        .await
        .expect("connect with the nkey");
    let _workers = fill(client, 1).await;
    let seed_file = dir.join("seed.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).expect("seed file");
    let config = format!(
        "poll_interval: 200ms\nsources:\n  js:\n    nats: {{servers: [\"{}\"], nkey_seed_file: \"{}\"}}\n{}",
        server.url(),
        seed_file.display(),
        metrics()
    );
    let a = Adapter::start(&config).await;
    a.wait_for("lag", None, Duration::from_secs(10), value_is(1.0))
        .await;
    a.stop().await;

    // A token, from a file.
    let server = PrivateNats::start("authorization {\n  token: \"s3cret-token\"\n}\n");
    let client = async_nats::ConnectOptions::with_token("s3cret-token".into())
        .connect(server.url())
        .await
        .expect("connect with the token");
    let _workers = fill(client, 2).await;
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token file");
    let config = format!(
        "poll_interval: 200ms\nsources:\n  js:\n    nats: {{servers: [\"{}\"], token_file: \"{}\"}}\n{}",
        server.url(),
        token_file.display(),
        metrics()
    );
    let a = Adapter::start(&config).await;
    a.wait_for("lag", None, Duration::from_secs(10), value_is(2.0))
        .await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn jetstream_of_another_account_through_its_api_prefix_and_of_a_domain() {
    let server = PrivateNats::start(&account_prefix_config());
    let owner = async_nats::ConnectOptions::with_user_and_password("a".into(), "a".into())
        .connect(server.url())
        .await
        .expect("connect as a");
    let _workers = fill(owner, 2).await;
    let config = format!(
        "poll_interval: 200ms\nsources:\n  js:\n    nats: {{servers: [\"{url}\"], username: b, password_env: QMA_TEST_NATS_B, api_prefix: JS.A.API}}\n  direct:\n    nats: {{servers: [\"{url}\"], username: b, password_env: QMA_TEST_NATS_B}}\n{}  - {{name: direct_lag, source: direct, measure: lag, nats: {{stream: JOBS, consumer: workers}}}}\n",
        metrics(),
        url = server.url(),
    );
    // SAFETY: set before the adapter starts; only this test reads it.
    unsafe { std::env::set_var("QMA_TEST_NATS_B", "b") };
    let a = Adapter::start(&config).await;
    a.wait_for("lag", None, Duration::from_secs(10), value_is(2.0))
        .await;
    a.wait_for("length", None, Duration::from_secs(10), value_is(2.0))
        .await;
    assert!(served(&a, "age").await.expect("age") > 0.0);
    // Account B has no JetStream of its own: without the prefix its own API says so.
    error_of(&a, "direct_lag", "JetStream not enabled for account").await;
    a.stop().await;

    // A JetStream domain (a hub or leaf node's): the API is `$JS.<domain>.API`.
    let dir = scratch_dir("domain");
    let config = format!(
        "jetstream {{\n  store_dir: \"{}\"\n  domain: hub\n}}\n",
        dir.join("js").display()
    );
    let server = PrivateNats::start_in(dir, &config);
    let client = async_nats::connect(server.url()).await.expect("connect");
    let _workers = fill(client, 3).await;
    let config = format!(
        "poll_interval: 200ms\nsources:\n  js:\n    nats: {{servers: [\"{url}\"], domain: hub}}\n  other:\n    nats: {{servers: [\"{url}\"], domain: elsewhere}}\n{}  - {{name: other_lag, source: other, measure: lag, nats: {{stream: JOBS, consumer: workers}}}}\n",
        metrics(),
        url = server.url(),
    );
    let a = Adapter::start(&config).await;
    a.wait_for("lag", None, Duration::from_secs(10), value_is(3.0))
        .await;
    error_of(&a, "other_lag", "nothing answered $JS.elsewhere.API").await;
    a.stop().await;
}

#[tokio::test]
async fn a_read_only_user_polls_without_changing_anything_and_the_wake_is_refused_cleanly() {
    let server = PrivateNats::start(&read_only_user_config());
    let admin =
        async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin-pass".into())
            .connect(server.url())
            .await
            .expect("connect as admin");
    let workers = fill(admin.clone(), 12).await;
    // Two of them taken and not acknowledged: in flight while the adapter polls.
    let mut taken = workers
        .fetch()
        .max_messages(2)
        .messages()
        .await
        .expect("fetch");
    let mut held = Vec::new();
    while let Some(m) = taken.next().await {
        held.push(m.expect("message"));
    }
    let snapshot = async || {
        let stream = js_api(&admin, "$JS.API.STREAM.INFO.JOBS", "").await;
        let consumer = js_api(&admin, "$JS.API.CONSUMER.INFO.JOBS.workers", "").await;
        let mut messages = Vec::new();
        for seq in 1..=12 {
            let m = js_api(
                &admin,
                "$JS.API.STREAM.MSG.GET.JOBS",
                &format!("{{\"seq\":{seq}}}"),
            )
            .await;
            messages.push(m["message"].clone());
        }
        (
            stream["state"].clone(),
            [
                "delivered",
                "ack_floor",
                "num_ack_pending",
                "num_redelivered",
                "num_waiting",
                "num_pending",
            ]
            .map(|k| consumer[k].clone()),
            messages,
        )
    };
    let before = snapshot().await;
    let config = format!(
        "poll_interval: 100ms\nsources:\n  js:\n    nats: {{servers: [\"{}\"], username: reader, password_env: QMA_TEST_NATS_READER}}\nmetrics:
  - {{name: lag, source: js, measure: lag, nats: {{stream: JOBS, consumer: workers}}}}
  - {{name: in_flight, source: js, measure: ack_pending, nats: {{stream: JOBS, consumer: workers}}}}
  - {{name: age, source: js, measure: oldest_unprocessed_age_seconds, nats: {{stream: JOBS, consumer: workers}}}}
  - {{name: pattern_lag, source: js, measure: lag, nats: {{stream: JOBS, consumer_pattern: '.'}}}}
  - {{name: length, source: js, measure: length, nats: {{stream: JOBS}}}}
  - {{name: idle, source: js, measure: lag, nats: {{stream: IDLE, consumer: workers}}}}
",
        server.url()
    );
    let idle = jetstream::new(admin.clone())
        .create_stream(stream::Config {
            name: "IDLE".into(),
            subjects: vec!["idle.>".into()],
            ..Default::default()
        })
        .await
        .expect("idle stream");
    idle.create_consumer(consumer::pull::Config {
        durable_name: Some("workers".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    })
    .await
    .expect("idle consumer");
    // SAFETY: set before the adapter starts; only this test reads it.
    unsafe { std::env::set_var("QMA_TEST_NATS_READER", "reader-pass") };
    let a = Adapter::start(&config).await;
    a.wait_for("lag", None, Duration::from_secs(10), value_is(10.0))
        .await;
    a.wait_for("in_flight", None, Duration::from_secs(10), value_is(2.0))
        .await;
    a.wait_for("idle", None, Duration::from_secs(10), value_is(0.0))
        .await;
    // Many polls (and the wake's subscription to the idle stream, which this user may not
    // make: refused, and the source is polled only).
    a.polls(30).await;
    assert!(served(&a, "age").await.expect("age") > 0.0);
    assert_eq!(served(&a, "length").await, Ok(12.0));
    let start = Instant::now();
    while !server
        .log()
        .contains("Subscription Violation - User \"reader\", Subject \"idle.>\"")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the wake's subscription was not tried: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The source says it is polled only, and keeps serving.
    let start = Instant::now();
    while !a
        .get_text("/metrics")
        .await
        .1
        .contains("qma_push_watching{source=\"js\"} 0")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "still watching");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.polls(5).await;
    a.wait_for("idle", None, Duration::from_secs(10), value_is(0.0))
        .await;
    a.stop().await;
    // Nothing but the read-only API was published: the server refused nothing else.
    assert!(
        !server.log().contains("Publish Violation"),
        "{}",
        server.log()
    );
    assert_eq!(snapshot().await, before, "the polls changed nothing");

    // A real worker then gets every message exactly once: none was delivered or redelivered by
    // the polls.
    let mut seen = Vec::new();
    for m in held {
        seen.push(String::from_utf8_lossy(&m.payload).into_owned());
        m.ack().await.expect("ack");
    }
    let mut rest = workers
        .fetch()
        .max_messages(20)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .expect("fetch");
    while let Some(m) = rest.next().await {
        let m = m.expect("message");
        let info = m.info().expect("info");
        assert_eq!(info.delivered, 1, "delivered once");
        seen.push(String::from_utf8_lossy(&m.payload).into_owned());
        m.ack().await.expect("ack");
    }
    seen.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("job {i}")).collect();
    want.sort();
    assert_eq!(seen, want);
}
