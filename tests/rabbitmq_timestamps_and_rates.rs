//! RabbitMQ values that depend on what publishers and the broker report, against real brokers:
//! a head timestamp in milliseconds or in the future is an error (or, with `timestamp_unit: ms`,
//! the right age), never `0`; `drain_seconds` counts messages that leave without an ack
//! (automatic-acknowledgement consumers); a broker that collects no rates makes every rate an
//! error while its counts stay served. Management statistics lag the broker by up to
//! `collect_statistics_interval` (5 s by default), so tests wait (bounded) for what they expect.

mod common;

use std::time::Duration;

use common::rabbit::{
    MANAGEMENT, RabbitNode, SlowAutoAckConsumer, TestVhost, config, publish_persistent,
    set_guest_password_env,
};
use common::{Adapter, quantity};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

fn value_of(body: &serde_json::Value) -> Option<f64> {
    body["items"][0]["value"].as_str().map(quantity)
}

fn error_saying(text: &'static str) -> impl Fn(u16, &serde_json::Value) -> bool {
    move |status, body| status == 503 && body["message"].as_str().is_some_and(|m| m.contains(text))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn a_millisecond_or_future_head_timestamp_is_an_error_not_zero() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-ms-ts").await;
    let conn = vh.connect().await;
    // A JavaScript-style publisher: Date.now() in the AMQP timestamp, two minutes ago.
    let _ms = vh
        .publish(&conn, "ms", "classic", &[("job", Some(now_ms() - 120_000))])
        .await;
    let _future = vh
        .publish(
            &conn,
            "future",
            "classic",
            &[("job", Some(common::rabbit::now_s() + 600))],
        )
        .await;
    let a = Adapter::start(&config(
        MANAGEMENT,
        &vh.name,
        &[
            ("age", "oldest_age_seconds", "queue: ms"),
            ("age-future", "oldest_age_seconds", "queue: future"),
        ],
    ))
    .await;
    let limit = Duration::from_secs(30);
    let (_, body) = a
        .wait_for("age", None, limit, error_saying("milliseconds"))
        .await;
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("timestamp_unit: ms")),
        "the error says what to configure: {body}"
    );
    a.wait_for("age-future", None, limit, error_saying("in the future"))
        .await;
    a.stop().await;
}

#[tokio::test]
async fn timestamp_unit_ms_reads_the_age_of_millisecond_publishers() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-ms-unit").await;
    let conn = vh.connect().await;
    let _ms = vh
        .publish(&conn, "ms", "classic", &[("job", Some(now_ms() - 120_000))])
        .await;
    let a = Adapter::start(&config(
        MANAGEMENT,
        &vh.name,
        &[(
            "age-ms",
            "oldest_age_seconds",
            "queue: ms, timestamp_unit: ms",
        )],
    ))
    .await;
    // Statistics lag the broker: until they show the message the queue reads (truly) as empty,
    // age 0, so wait for the message's own age (bounded).
    let (_, body) = a
        .wait_for("age-ms", None, Duration::from_secs(30), |status, body| {
            status == 200 && value_of(body).is_some_and(|age| age > 0.0)
        })
        .await;
    let age = value_of(&body).expect("a value");
    assert!((119.0..130.0).contains(&age), "two minutes old: {body}");
    a.stop().await;
}

#[tokio::test]
async fn drain_time_counts_messages_an_automatic_ack_consumer_takes() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-auto-ack").await;
    let conn = vh.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        "drain".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let body = vec![b'x'; 16 * 1024];
    let mut confirms = Vec::new();
    for _ in 0..1500 {
        confirms.push(
            ch.basic_publish(
                "".into(),
                "drain".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .expect("publish"),
        );
    }
    for c in confirms {
        c.await.expect("confirm");
    }
    let a = Adapter::start(&config(
        MANAGEMENT,
        &vh.name,
        &[
            ("drain", "drain_seconds", "queue: drain"),
            ("total", "total", "queue: drain"),
            ("acks", "ack_rate", "queue: drain"),
        ],
    ))
    .await;
    // About 20 messages a second leave, none of them acknowledged.
    let _worker =
        SlowAutoAckConsumer::start(&vh.name, "drain", 320 * 1024, Duration::from_millis(1000))
            .await;
    let (_, body) = a
        .wait_for("drain", None, Duration::from_secs(40), |status, body| {
            status == 200 && value_of(body).is_some_and(|d| d > 0.0 && d < 86_400.0)
        })
        .await;
    let drain = value_of(&body).expect("value");
    let (status, total) = a.metric("total", None).await;
    let backlog = value_of(&total).expect("total");
    assert!(
        status == 200 && backlog > 0.0,
        "still a backlog while it drains: {total}"
    );
    assert!(
        drain < 3_600.0,
        "a backlog of {backlog} draining at the consumer's pace, not the cap: {drain} s"
    );
    eprintln!("drain_seconds {drain} with a backlog of {backlog}");
    let (_, acks) = a.metric("acks", None).await;
    assert_eq!(
        value_of(&acks),
        Some(0.0),
        "nothing was acknowledged: {acks}"
    );
    drop(ch);
    a.stop().await;
}

#[tokio::test]
async fn a_broker_that_collects_no_rates_makes_rates_errors_and_keeps_counts() {
    set_guest_password_env();
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let mut node =
        RabbitNode::start_with(|_, _| ("management.rates_mode = none\n".into(), false)).await;
    publish_persistent(&node.amqp_url(), "jobs", &["job", "job", "job"]).await;
    let a = Adapter::start(&config(
        &node.management_url(),
        "/",
        &[
            ("ready", "ready", "queue: jobs"),
            ("publishing", "publish_rate", "queue: jobs"),
            ("acks", "ack_rate", "queue: jobs"),
            ("drain", "drain_seconds", "queue: jobs"),
            ("arrivals", "arrival_rate", "queue: jobs"),
            ("completions", "completion_rate", "queue: jobs"),
        ],
    ))
    .await;
    let limit = Duration::from_secs(30);
    a.wait_for("ready", None, limit, |s, b| {
        s == 200 && value_of(b) == Some(3.0)
    })
    .await;
    for metric in ["publishing", "acks", "drain", "arrivals", "completions"] {
        a.wait_for(metric, None, limit, error_saying("rates_mode: none"))
            .await;
    }

    // The same broker with its metrics collector off: no statistics at all.
    node.stop().await;
    let conf = node.dir().join("rabbitmq.conf");
    let text = std::fs::read_to_string(&conf).expect("conf");
    std::fs::write(
        &conf,
        text.replace(
            "management.rates_mode = none",
            "management_agent.disable_metrics_collector = true",
        ),
    )
    .expect("conf");
    node.boot().await;
    let limit = Duration::from_secs(60);
    for metric in ["publishing", "drain", "arrivals"] {
        a.wait_for(metric, None, limit, error_saying("disable_stats"))
            .await;
    }
    let (status, body) = a
        .wait_for("ready", None, limit, |s, b| {
            s == 200 && value_of(b) == Some(3.0)
        })
        .await;
    assert_eq!(status, 200, "counts stay served without statistics: {body}");
    a.stop().await;
}
