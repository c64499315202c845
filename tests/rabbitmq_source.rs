//! The RabbitMQ source against the real broker: each test in its own vhost. Management
//! statistics lag the broker by up to `collect_statistics_interval` (5 s by default), so tests
//! wait (bounded) for the value they expect rather than sleeping.

mod common;

use std::time::{Duration, Instant};

use common::rabbit::{MANAGEMENT, TestVhost, now_s, set_guest_password_env};
use common::{Adapter, quantity, value_is};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions};

fn config(vhost: &str, metrics: &[(&str, &str, &str)]) -> String {
    common::rabbit::config(MANAGEMENT, vhost, metrics)
}

/// How long the broker's statistics may take to show a change.
const STATS: Duration = Duration::from_secs(30);

#[tokio::test]
async fn classic_queue_with_timestamps_reports_depth_and_age() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-ts").await;
    let conn = vh.connect().await;
    let t0 = now_s() - 90;
    let msgs: Vec<(String, Option<u64>)> =
        (0..5).map(|i| (format!("job-{i}"), Some(t0 + i))).collect();
    let refs: Vec<(&str, Option<u64>)> = msgs.iter().map(|(b, t)| (b.as_str(), *t)).collect();
    vh.publish(&conn, "embed.classic", "classic", &refs).await;
    let a = Adapter::start(&config(
        &vh.name,
        &[
            ("ready", "ready", "queue: embed.classic"),
            ("total", "total", "queue: embed.classic"),
            ("age", "oldest_age_seconds", "queue: embed.classic"),
        ],
    ))
    .await;
    a.wait_for("ready", None, STATS, value_is(5.0)).await;
    let (_, body) = a.metric("total", None).await;
    assert_eq!(
        body["items"][0]["metricLabels"],
        serde_json::json!({"queue": "embed.classic", "vhost": vh.name})
    );
    // RabbitMQ reports head_message_timestamp only for paged-in messages: wait for it (bounded).
    let (_, body) = a
        .wait_for("age", None, STATS, |status, _| status == 200)
        .await;
    let age = quantity(body["items"][0]["value"].as_str().expect("value"));
    let truth = (now_s() - t0) as f64;
    assert!(
        (age - truth).abs() <= 1.0,
        "age {age} within 1 s of {truth}"
    );
    a.stop().await;
}

#[tokio::test]
async fn age_is_unavailable_without_timestamps_and_on_quorum_queues() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-nots").await;
    let conn = vh.connect().await;
    vh.publish(&conn, "nots", "classic", &[("a", None), ("b", None)])
        .await;
    vh.publish(
        &conn,
        "quorum",
        "quorum",
        &[("a", Some(now_s())), ("b", Some(now_s()))],
    )
    .await;
    let a = Adapter::start(&config(
        &vh.name,
        &[
            ("nots-age", "oldest_age_seconds", "queue: nots"),
            ("nots-ready", "ready", "queue: nots"),
            ("q-age", "oldest_age_seconds", "queue: quorum"),
            ("q-ready", "ready", "queue: quorum"),
        ],
    ))
    .await;
    a.wait_for("nots-ready", None, STATS, value_is(2.0)).await;
    a.wait_for("q-ready", None, STATS, value_is(2.0)).await;
    let (status, body) = a.metric("nots-age", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("timestamp property"),
        "{body}"
    );
    let (status, body) = a.metric("q-age", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("quorum queue"),
        "{body}"
    );
    a.stop().await;
}

#[tokio::test]
async fn unacked_messages_count_and_age_includes_the_oldest_unacked() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-unacked").await;
    let conn = vh.connect().await;
    let t0 = now_s() - 300;
    let msgs: Vec<(String, Option<u64>)> = (0..5)
        .map(|i| (format!("m{i}"), Some(t0 + i * 60)))
        .collect();
    let refs: Vec<(&str, Option<u64>)> = msgs.iter().map(|(b, t)| (b.as_str(), *t)).collect();
    vh.publish(&conn, "work", "classic", &refs).await;
    let (_ch, mut consumer) = vh.hold_unacked(&conn, "work", 1).await;
    let held = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery")
        .expect("stream")
        .expect("delivery");
    assert_eq!(held.data, b"m0");
    let a = Adapter::start(&config(
        &vh.name,
        &[
            ("ready", "ready", "queue: work"),
            ("unacked", "unacked", "queue: work"),
            ("consumers", "consumers", "queue: work"),
            ("age", "oldest_age_seconds", "queue: work"),
        ],
    ))
    .await;
    a.wait_for("unacked", None, STATS, value_is(1.0)).await;
    a.wait_for("ready", None, STATS, value_is(4.0)).await;
    a.wait_for("consumers", None, STATS, value_is(1.0)).await;
    // head_message_timestamp counts the oldest unacknowledged message (docs/reference/sources.md §3.3).
    let (_, body) = a
        .wait_for("age", None, STATS, |status, _| status == 200)
        .await;
    let age = quantity(body["items"][0]["value"].as_str().expect("value"));
    let truth = (now_s() - t0) as f64;
    assert!(
        (age - truth).abs() <= 1.0,
        "age {age} is the held message's, {truth}"
    );
    a.stop().await;
}

#[tokio::test]
async fn rates_appear_after_publishing() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-rates").await;
    let conn = vh.connect().await;
    let a = Adapter::start(&config(
        &vh.name,
        &[
            ("pub", "publish_rate", "queue: rates"),
            ("drain", "drain_seconds", "queue: rates"),
        ],
    ))
    .await;
    let ch = vh.publish(&conn, "rates", "classic", &[("x", None)]).await;
    let start = Instant::now();
    // Keep publishing until the statistics show a positive rate.
    let found = loop {
        vh.publish(&conn, "rates", "classic", &[("x", None), ("y", None)])
            .await;
        let (status, body) = a.metric("pub", None).await;
        if status == 200 && quantity(body["items"][0]["value"].as_str().unwrap_or("0")) > 0.0 {
            break true;
        }
        if start.elapsed() > Duration::from_secs(30) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(found, "publish_rate became positive");
    // Nothing acknowledges: the backlog never drains, which is served as max_drain_seconds.
    a.wait_for("drain", None, STATS, value_is(86_400.0)).await;
    drop(ch);
    a.stop().await;
}

#[tokio::test]
async fn a_pattern_selects_queues_by_regex_and_a_missing_queue_is_an_error() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-regex").await;
    let conn = vh.connect().await;
    vh.publish(&conn, "embed.a", "classic", &[("1", None)])
        .await;
    vh.publish(&conn, "embed.b", "classic", &[("1", None), ("2", None)])
        .await;
    vh.publish(&conn, "rerank", "classic", &[("1", None)]).await;
    let a = Adapter::start(&config(
        &vh.name,
        &[
            ("embeds", "total", "queue_pattern: \"^embed\\\\.\""),
            ("gone", "ready", "queue: no-such-queue"),
        ],
    ))
    .await;
    let (_, body) = a
        .wait_for("embeds", None, STATS, |s, b| {
            s == 200
                && b["items"]
                    .as_array()
                    .is_some_and(|i| i.len() == 2 && i.iter().all(|x| x["value"] != "0"))
        })
        .await;
    let names: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metricLabels"]["queue"].as_str().expect("queue"))
        .collect();
    assert_eq!(names, vec!["embed.a", "embed.b"]);
    a.wait_for("embeds", Some("queue=embed.b"), STATS, value_is(2.0))
        .await;
    let (status, body) = a.metric("gone", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("\"no-such-queue\" not found"),
        "{body}"
    );
    a.stop().await;
}

#[tokio::test]
async fn amqp_passive_declare_reads_ready_and_consumers_and_survives_a_missing_queue() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-amqp").await;
    let conn = vh.connect().await;
    vh.publish(
        &conn,
        "a-present",
        "classic",
        &[("1", None), ("2", None), ("3", None)],
    )
    .await;
    vh.publish(&conn, "c-present", "classic", &[("1", None)])
        .await;
    let amqp = format!("amqp://127.0.0.1:5672/{}", common::rabbit::encode(&vh.name));
    let a = Adapter::start(&format!(
        "poll_interval: 250ms\nsources:\n  rabbit:\n    rabbitmq: {{amqp_url: \"{amqp}\", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD}}\nmetrics:\n  - {{name: a, source: rabbit, measure: ready, rabbitmq: {{vhost: \"{v}\", queue: a-present}}}}\n  - {{name: b, source: rabbit, measure: ready, rabbitmq: {{vhost: \"{v}\", queue: b-missing}}}}\n  - {{name: c, source: rabbit, measure: ready, rabbitmq: {{vhost: \"{v}\", queue: c-present}}}}\n  - {{name: c-consumers, source: rabbit, measure: consumers, rabbitmq: {{vhost: \"{v}\", queue: c-present}}}}\n",
        v = vh.name
    ))
    .await;
    a.polls(2).await;
    // Passive declare is exact and immediate: no statistics lag.
    assert_eq!(a.metric("a", None).await.1["items"][0]["value"], "3");
    let (status, body) = a.metric("b", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("not found"),
        "{body}"
    );
    assert_eq!(
        a.metric("c", None).await.1["items"][0]["value"],
        "1",
        "the queue after a 404 is still read"
    );
    assert_eq!(
        a.metric("c-consumers", None).await.1["items"][0]["value"],
        "0"
    );
    a.stop().await;
}

#[tokio::test]
async fn polling_never_changes_messages_order_or_redelivered_flags() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-readonly").await;
    let conn = vh.connect().await;
    let bodies: Vec<String> = (0..20).map(|i| format!("msg-{i:02}")).collect();
    let refs: Vec<(&str, Option<u64>)> =
        bodies.iter().map(|b| (b.as_str(), Some(now_s()))).collect();
    vh.publish(&conn, "classic", "classic", &refs).await;
    vh.publish(&conn, "quorum", "quorum", &refs).await;
    let amqp = format!("amqp://127.0.0.1:5672/{}", common::rabbit::encode(&vh.name));
    // Both readers at once, polling fast.
    let mut yaml = config(
        &vh.name,
        &[
            ("m1", "total", "queue: classic"),
            ("m2", "oldest_age_seconds", "queue: classic"),
            ("m3", "total", "queue: quorum"),
            ("m4", "drain_seconds", "queue_pattern: \".*\""),
        ],
    );
    yaml = yaml.replace("sources:\n", &format!("sources:\n  amqp:\n    rabbitmq: {{amqp_url: \"{amqp}\", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD}}\n"));
    yaml.push_str(&format!("  - {{name: m5, source: amqp, measure: ready, rabbitmq: {{vhost: \"{}\", queue: classic}}}}\n", vh.name));
    yaml.push_str(&format!("  - {{name: m6, source: amqp, measure: ready, rabbitmq: {{vhost: \"{}\", queue: quorum}}}}\n", vh.name));
    let a = Adapter::start(&yaml.replace("poll_interval: 250ms", "poll_interval: 100ms")).await;
    a.polls(40).await;
    a.wait_for("m1", None, STATS, value_is(20.0)).await;
    a.stop().await;

    let ch = conn.create_channel().await.expect("channel");
    for queue in ["classic", "quorum"] {
        for want in &bodies {
            let got = ch
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("{queue}: message {want} missing"));
            assert_eq!(
                std::str::from_utf8(&got.delivery.data).expect("utf8"),
                want,
                "{queue}: order and body unchanged"
            );
            assert!(
                !got.delivery.redelivered,
                "{queue}: {want} was never redelivered"
            );
            got.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
        }
    }
}

#[tokio::test]
async fn a_management_answer_over_max_response_bytes_fails_the_poll_not_the_process() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-max-bytes").await;
    let conn = vh.connect().await;
    let _ch = vh.publish(&conn, "big", "classic", &[("x", None)]).await;
    let yaml = config(&vh.name, &[("ready", "ready", "queue: big")]).replace(
        "password_env: QMA_TEST_RABBIT_PASSWORD}",
        "password_env: QMA_TEST_RABBIT_PASSWORD, max_response_bytes: 100}",
    );
    let a = Adapter::start(&yaml).await;
    a.polls(1).await;
    let (status, body) = a.metric("ready", None).await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("larger than the limit of 100 bytes (max_response_bytes)"),
        "{body}"
    );
    a.stop().await;
}

/// With `read_via: amqp` and a 30 s poll interval, a message into a queue at zero is served
/// within seconds: the idle check declares the queue again every 500 ms and wakes the poll.
/// Without it the value would wait for the next poll, 30 s away.
#[tokio::test]
async fn an_idle_queue_over_amqp_wakes_the_poll_when_a_message_arrives() {
    set_guest_password_env();
    let vh = TestVhost::new("rmq-idle").await;
    let conn = vh.connect().await;
    let ch = vh.publish(&conn, "idle", "classic", &[]).await;
    let amqp = format!("amqp://127.0.0.1:5672/{}", common::rabbit::encode(&vh.name));
    let a = Adapter::start(&format!(
        "poll_interval: 30s\nsources:\n  rabbit:\n    rabbitmq: {{amqp_url: \"{amqp}\", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD}}\nmetrics:\n  - {{name: idle, source: rabbit, measure: ready, rabbitmq: {{vhost: \"{v}\", queue: idle}}}}\n",
        v = vh.name
    ))
    .await;
    a.wait_for("idle", None, Duration::from_secs(10), value_is(0.0))
        .await;
    let published = Instant::now();
    ch.basic_publish(
        "".into(),
        "idle".into(),
        lapin::options::BasicPublishOptions::default(),
        b"job",
        lapin::BasicProperties::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    a.wait_for("idle", None, Duration::from_secs(5), value_is(1.0))
        .await;
    eprintln!("idle queue woke in {:?}", published.elapsed());
    let (_, metrics) = a.get_text("/metrics").await;
    assert!(
        metrics.contains("qma_wake_polls_total{source=\"rabbit\"} 1"),
        "{metrics}"
    );
    a.stop().await;
}

/// A metric that names no vhost reads the one its source's `amqp_url` names (issue 30): two
/// vhosts hold a queue of the same name with different depths, and each source serves its own.
/// Before, every such metric read `/`: "not found", or, had `/` held a queue of that name, its
/// depth without any error.
#[tokio::test]
async fn a_metric_reads_the_vhost_its_amqp_url_names() {
    set_guest_password_env();
    let jobs = TestVhost::new("rmq-url-vhost-a").await;
    let other = TestVhost::new("rmq-url-vhost-b").await;
    for (vh, depth) in [(&jobs, 3), (&other, 5)] {
        let conn = vh.connect().await;
        let bodies: Vec<(&str, Option<u64>)> = (0..depth).map(|_| ("job", None)).collect();
        vh.publish(&conn, "celery", "classic", &bodies).await;
    }
    let url =
        |vh: &TestVhost| format!("amqp://127.0.0.1:5672/{}", common::rabbit::encode(&vh.name));
    let source = |name: &str, url: &str| {
        format!(
            "  {name}:\n    rabbitmq: {{amqp_url: \"{url}\", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD}}\n"
        )
    };
    let yaml = format!(
        "poll_interval: 250ms\nsources:\n{}{}{}  mgmt:\n    rabbitmq: {{management_url: \"{MANAGEMENT}\", amqp_url: \"{}\", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD}}\nmetrics:\n  - {{name: via-a, source: a, measure: ready, rabbitmq: {{queue: celery}}}}\n  - {{name: via-b, source: b, measure: ready, rabbitmq: {{queue: celery}}}}\n  - {{name: bare-b, source: bare, measure: ready, rabbitmq: {{vhost: \"{}\", queue: celery}}}}\n  - {{name: mgmt-a, source: mgmt, measure: total, rabbitmq: {{queue: celery}}}}\n",
        source("a", &url(&jobs)),
        source("b", &url(&other)),
        source("bare", "amqp://127.0.0.1:5672"),
        url(&jobs),
        other.name,
    );
    let a = Adapter::start(&yaml).await;
    a.ready().await;
    for (metric, want, vhost) in [
        ("via-a", 3.0, &jobs.name),
        ("via-b", 5.0, &other.name),
        ("bare-b", 5.0, &other.name),
    ] {
        let (status, body) = a.metric(metric, None).await;
        assert_eq!(status, 200, "{metric}: {body}");
        assert_eq!(common::single_value(&body), want, "{metric}: {body}");
        // Test vhost names are valid label values, so the label is the name itself.
        assert_eq!(
            body["items"][0]["metricLabels"]["vhost"], **vhost,
            "{metric}: {body}"
        );
    }
    a.wait_for("mgmt-a", None, STATS, value_is(3.0)).await;
    a.stop().await;
}
