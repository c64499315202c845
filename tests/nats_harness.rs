//! The NATS test harness (tests/common/nats.rs) proven against a real `nats-server`: a private
//! server keeps its JetStream data across a restart, TLS wants the client certificate, an NKey
//! user gets in, a second account reaches JetStream through an API prefix, and the read-only
//! user reads but is refused a change and a subscription, the way async-nats reports it.

mod common;

use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerError};
use common::nats::{self, PrivateNats};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Options that collect the connection's events into a channel.
fn with_events(options: ConnectOptions) -> (ConnectOptions, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let options = options.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event);
        }
    });
    (options, rx)
}

/// Waits (bounded) for a `ServerError` event whose text is `want`.
async fn server_error(events: &mut mpsc::UnboundedReceiver<Event>, want: &str) {
    let wait = tokio::time::timeout(Duration::from_secs(5), async {
        let mut seen = Vec::new();
        while let Some(event) = events.recv().await {
            if event == Event::ServerError(ServerError::Other(want.to_string())) {
                return Ok(());
            }
            seen.push(event);
        }
        Err(seen)
    })
    .await;
    match wait {
        Ok(Ok(())) => {}
        Ok(Err(seen)) => panic!("no {want:?} among {seen:?}"),
        Err(_) => panic!("no {want:?} within 5 s"),
    }
}

async fn stream_with_messages(client: &async_nats::Client, name: &str, subject: &str, n: usize) {
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .expect("create stream");
    for i in 0..n {
        js.publish(format!("{subject}.{i}"), "job".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

#[tokio::test]
async fn a_private_server_keeps_its_streams_across_a_restart() {
    let mut server = PrivateNats::start("");
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port));
    assert!(server.config_text().contains("store_dir"));
    let client = async_nats::connect(server.url()).await.expect("connect");
    stream_with_messages(&client, "KEEP", "keep", 3).await;
    let dir = server.dir.clone();

    server.restart();
    let client = async_nats::connect(server.url())
        .await
        .expect("connect again");
    let info = nats::js_api(&client, "$JS.API.STREAM.INFO.KEEP", "").await;
    assert_eq!(info["state"]["messages"], 3, "{info}");
    assert!(server.log().contains("Server is ready"), "{}", server.log());

    server.stop();
    assert!(server.info().is_none(), "stopped");
    drop(server);
    assert!(!dir.exists(), "the scratch directory goes with the server");
}

#[test]
fn a_server_that_cannot_start_panics_with_its_log() {
    let panic = std::panic::catch_unwind(|| PrivateNats::start("this is { not a config"))
        .expect_err("a configuration that does not parse");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("exited") && text.contains("its log"),
        "{text}"
    );
}

#[tokio::test]
async fn tls_wants_the_client_certificate() {
    let dir = nats::scratch_dir("tls");
    let (config, ca, cert, key) = nats::tls_config(&dir);
    let server = PrivateNats::start_in(dir, &config);
    let info = server.info().expect("INFO before the handshake");
    assert!(info.contains(r#""tls_verify":true"#), "{info}");

    let client = ConnectOptions::new()
        .add_root_certificates(ca.clone())
        .add_client_certificate(cert, key)
        .require_tls(true)
        .connect(format!("tls://127.0.0.1:{}", server.port))
        .await
        .expect("connect with the client certificate");
    let account = nats::js_api(&client, "$JS.API.INFO", "").await;
    assert_eq!(
        account["type"], "io.nats.jetstream.api.v1.account_info_response",
        "{account}"
    );

    let refused = ConnectOptions::new()
        .add_root_certificates(ca)
        .require_tls(true)
        .connect(server.url())
        .await;
    assert!(refused.is_err(), "no client certificate, no connection");
}

#[tokio::test]
async fn an_nkey_user_gets_in_and_another_key_does_not() {
    let (seed, public) = nats::nkey_user();
    assert!(seed.starts_with("SU") && seed.len() == 58, "{seed}");
    assert!(public.starts_with('U') && public.len() == 56, "{public}");
    let server = PrivateNats::start(&nats::nkey_config(&public));
    let client = ConnectOptions::with_nkey(seed)
        .connect(server.url())
        .await
        .expect("connect with the NKey");
    let account = nats::js_api(&client, "$JS.API.INFO", "").await;
    assert!(account.get("error").is_none(), "{account}");

    let (other_seed, _) = nats::nkey_user();
    let refused = ConnectOptions::with_nkey(other_seed)
        .connect(server.url())
        .await
        .expect_err("another key is refused");
    assert_eq!(
        refused.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
    );
}

#[tokio::test]
async fn account_b_reads_account_a_jetstream_through_the_prefix() {
    let server = PrivateNats::start(&nats::account_prefix_config());
    let a = ConnectOptions::with_user_and_password("a".into(), "a".into())
        .connect(server.url())
        .await
        .expect("connect as a");
    stream_with_messages(&a, "JOBS", "jobs", 2).await;
    async_nats::jetstream::new(a.clone())
        .get_stream("JOBS")
        .await
        .expect("stream")
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("workers".into()),
            ..Default::default()
        })
        .await
        .expect("consumer");

    let b = ConnectOptions::with_user_and_password("b".into(), "b".into())
        .connect(server.url())
        .await
        .expect("connect as b");
    let account = nats::js_api(&b, "JS.A.API.INFO", "").await;
    assert_eq!(account["streams"], 1, "{account}");
    let stream = nats::js_api(&b, "JS.A.API.STREAM.INFO.JOBS", "").await;
    assert_eq!(stream["state"]["messages"], 2, "{stream}");
    let first = nats::js_api(
        &b,
        "JS.A.API.STREAM.MSG.GET.JOBS",
        r#"{"seq":1,"next_by_subj":"jobs.>"}"#,
    )
    .await;
    assert_eq!(first["message"]["seq"], 1, "{first}");
    assert_eq!(first["message"]["subject"], "jobs.0", "{first}");
    let consumers = nats::js_api(&b, "JS.A.API.CONSUMER.LIST.JOBS", "").await;
    assert_eq!(consumers["consumers"][0]["name"], "workers", "{consumers}");
    assert_eq!(consumers["consumers"][0]["num_pending"], 2, "{consumers}");

    // B's own JetStream API: the account has none.
    let own = nats::js_api(&b, "$JS.API.INFO", "").await;
    assert_eq!(own["error"]["code"], 503, "{own}");
    assert_eq!(own["error"]["err_code"], 10039, "{own}");
}

#[tokio::test]
async fn the_read_only_user_reads_and_is_refused_a_change_and_a_subscription() {
    let server = PrivateNats::start(&nats::read_only_user_config());
    let admin = ConnectOptions::with_user_and_password("admin".into(), "admin-pass".into())
        .connect(server.url())
        .await
        .expect("connect as admin");
    stream_with_messages(&admin, "JOBS", "jobs", 1).await;

    let (options, mut events) = with_events(ConnectOptions::with_user_and_password(
        "reader".into(),
        "reader-pass".into(),
    ));
    let reader = options
        .connect(server.url())
        .await
        .expect("connect as reader");
    let stream = nats::js_api(&reader, "$JS.API.STREAM.INFO.JOBS", "").await;
    assert_eq!(stream["state"]["messages"], 1, "{stream}");
    let message = nats::js_api(&reader, "$JS.API.STREAM.MSG.GET.JOBS", r#"{"seq":1}"#).await;
    assert_eq!(message["message"]["subject"], "jobs.0", "{message}");

    // A change: the publish is dropped, so no reply ever comes (a timeout, not "no
    // responders"), and the server says why on the connection.
    let create = reader
        .send_request(
            "$JS.API.STREAM.CREATE.X",
            async_nats::Request::new()
                .payload(r#"{"name":"X","subjects":["x"]}"#.into())
                .timeout(Some(Duration::from_secs(1))),
        )
        .await
        .expect_err("no reply to a refused publish");
    assert_eq!(create.kind(), async_nats::RequestErrorKind::TimedOut);
    server_error(
        &mut events,
        r#"Permissions Violation for Publish to "$JS.API.STREAM.CREATE.X""#,
    )
    .await;
    let names = nats::js_api(&admin, "$JS.API.STREAM.NAMES", "").await;
    assert_eq!(names["streams"], serde_json::json!(["JOBS"]), "{names}");

    // A wake subscription to the stream's subjects: accepted by the client, refused by the
    // server; the subscriber neither yields nor ends, and the connection stays usable.
    let mut wake = reader.subscribe("jobs.>").await.expect("subscribe is Ok");
    server_error(
        &mut events,
        r#"Permissions Violation for Subscription to "jobs.>""#,
    )
    .await;
    async_nats::jetstream::new(admin.clone())
        .publish("jobs.1", "job".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), wake.next())
            .await
            .is_err(),
        "the refused subscriber stays pending"
    );
    assert_eq!(
        reader.connection_state(),
        async_nats::connection::State::Connected
    );
    let stream = nats::js_api(&reader, "$JS.API.STREAM.INFO.JOBS", "").await;
    assert_eq!(stream["state"]["messages"], 2, "{stream}");
}
