//! The `nats` source against private `nats-server`s started by the tests (`common::nats`), for
//! what the shared server cannot show: a restart, TLS with a client certificate, user/password
//! and NKey logins, JetStream reached through another account's API prefix, and a user allowed
//! only the read-only API, which proves that polls send nothing else and leave every stream,
//! consumer and message as it was; and a three-server cluster whose stream leader is killed, to
//! show that a stream electing its leader is an error, never a made-up value. (`.creds` files
//! are not exercised: making the operator, account and user JWTs needs `nsc`, which cannot be
//! installed here.)

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use common::nats::{
    PrivateCluster, PrivateNats, account_prefix_config, error_of, js_api, nkey_config, nkey_user,
    read_only_user_config, scratch_dir, take, tls_config, try_js_api,
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

/// The server name of stream `JOBS`'s leader, if its leader answers within a second.
async fn stream_leader(client: &async_nats::Client) -> Option<String> {
    let info = try_js_api(
        client,
        "$JS.API.STREAM.INFO.JOBS",
        "",
        Duration::from_secs(1),
    )
    .await?;
    info["cluster"]["leader"].as_str().map(str::to_string)
}

/// What one read of a metric answered.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// HTTP 200 with one series of this value.
    Value(f64),
    /// Not 200: the metric's error.
    Error(u16, String),
    /// Anything else: 200 without exactly one series, or a value that is not a number.
    Other(u16, String),
}

async fn answer(a: &Adapter, metric: &str) -> Answer {
    let (status, body) = a.metric(metric, None).await;
    let items = body["items"].as_array().map_or(0, Vec::len);
    let value = body["items"][0]["value"].as_str().and_then(|q| {
        let milli = q.strip_suffix('m');
        let n: f64 = milli.unwrap_or(q).parse().ok()?;
        Some(if milli.is_some() { n / 1000.0 } else { n })
    });
    match (status, items, value) {
        (200, 1, Some(v)) => Answer::Value(v),
        (200, ..) => Answer::Other(status, body.to_string()),
        _ => Answer::Error(status, body.to_string()),
    }
}

#[tokio::test]
async fn a_clustered_stream_electing_its_leader_is_an_error_never_a_made_up_value() {
    let mut cluster = PrivateCluster::start(3);
    let urls = cluster.urls();
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse().expect("server url"))
        .collect();
    let client = async_nats::ConnectOptions::new()
        .connect(addrs)
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    // The meta group elects its leader a few seconds after the routes connect; until then a
    // create is not answered, or refused.
    let config = stream::Config {
        name: "JOBS".into(),
        subjects: vec!["jobs.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        num_replicas: 3,
        ..Default::default()
    };
    let start = Instant::now();
    let jobs = loop {
        match tokio::time::timeout(Duration::from_secs(2), js.create_stream(config.clone())).await {
            Ok(Ok(s)) => break s,
            got => assert!(
                start.elapsed() < Duration::from_secs(20),
                "no JetStream meta leader after {:?}: {got:?}",
                start.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    jobs.create_consumer(consumer::pull::Config {
        durable_name: Some("workers".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .expect("consumer");
    for i in 0..5 {
        js.publish(format!("jobs.{i}"), format!("job {i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let servers = urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "poll_interval: 200ms\npoll_timeout: 2s\nsources:\n  js:\n    nats: {{servers: [{servers}]}}\n{}",
        metrics()
    );
    let a = Adapter::start(&config).await;
    a.wait_for("lag", None, Duration::from_secs(10), value_is(5.0))
        .await;

    // The leader is made the server the adapter is connected to (the client picks one of the
    // three at random), by stepping it down until it is: its stop then also drops the
    // adapter's connection, which reconnects to one of the other two.
    let start = Instant::now();
    let adapter_on = loop {
        if let Some(i) = cluster.connected_to("queue-metrics-adapter/js").await {
            break i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the adapter is connected to no server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leader_now = async || {
        let start = Instant::now();
        loop {
            if let Some(name) = stream_leader(&client).await {
                return name;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "JOBS has no leader"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut leader = leader_now().await;
    let mut stepdowns = 0;
    while cluster.index_of(&leader) != Some(adapter_on) && stepdowns < 6 {
        stepdowns += 1;
        let _ = try_js_api(
            &client,
            "$JS.API.STREAM.LEADER.STEPDOWN.JOBS",
            "",
            Duration::from_secs(2),
        )
        .await;
        let start = Instant::now();
        loop {
            let now = leader_now().await;
            if now != leader {
                leader = now;
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{leader} stayed the leader of JOBS after a step down"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let stopped_index = cluster
        .index_of(&leader)
        .expect("the leader is one of ours");
    a.wait_for("lag", None, Duration::from_secs(10), value_is(5.0))
        .await;

    cluster.servers[stopped_index].stop();
    let stopped = Instant::now();
    // Every answer while the other two elect a new leader: 5 (a poll that read the leader), or
    // an error (HPA holds); any other number would be made up.
    let mut answers: Vec<(Duration, Answer)> = Vec::new();
    // The first 5 after the last error, from a poll begun after the stop (a poll in flight at
    // the stop ends within poll_timeout, 2 s).
    let mut served_again: Option<Duration> = None;
    loop {
        let got = answer(&a, "lag").await;
        let at = stopped.elapsed();
        match &got {
            Answer::Value(v) if *v == 5.0 => {
                if served_again.is_none() && at > Duration::from_millis(2_500) {
                    served_again = Some(at);
                }
            }
            Answer::Error(..) => served_again = None,
            wrong => panic!(
                "lag served {wrong:?} {at:?} after the leader {leader} was stopped; the answers before it: {:?}",
                answers.iter().rev().take(20).collect::<Vec<_>>()
            ),
        }
        answers.push((at, got));
        let settled = served_again.is_some_and(|t| at >= t + Duration::from_secs(2));
        if (settled && at >= Duration::from_secs(5)) || at >= Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let errors: Vec<&(Duration, Answer)> = answers
        .iter()
        .filter(|(_, g)| matches!(g, Answer::Error(..)))
        .collect();
    let mut texts: Vec<&str> = errors
        .iter()
        .filter_map(|(_, g)| match g {
            Answer::Error(_, t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    texts.dedup();
    let reconnected_to = cluster.connected_to("queue-metrics-adapter/js").await;
    eprintln!(
        "stopped the leader {leader} after {stepdowns} step downs (the adapter was connected to n{adapter_on}, then to {reconnected_to:?}): {} answers over {:?}, {} of them 5, {} errors (first {:?}, last {:?}); served 5 again from {served_again:?}; the errors: {:?}",
        answers.len(),
        stopped.elapsed(),
        answers.len() - errors.len(),
        errors.len(),
        errors.first().map(|(t, _)| t),
        errors.last().map(|(t, _)| t),
        texts.iter().take(4).collect::<Vec<_>>()
    );
    assert!(
        served_again.is_some(),
        "lag was not served again after the leader {leader} was stopped: {:?}",
        answers.iter().rev().take(10).collect::<Vec<_>>()
    );

    cluster.servers[stopped_index].restart();
    a.wait_for("lag", None, Duration::from_secs(10), value_is(5.0))
        .await;
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
    let held = take(&workers, 2).await;
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
