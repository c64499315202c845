//! A RabbitMQ broker that stops never produces a `0` or a crash; values return once it is back.
//! Uses a private node (its own ports and data) so the shared broker is not disturbed.

mod common;

use std::time::{Duration, Instant};

use common::rabbit::{RabbitNode, publish_persistent, set_guest_password_env};
use common::{Adapter, quantity};

async fn value(a: &Adapter) -> (u16, Option<f64>) {
    let (status, body) = a.metric("total", None).await;
    (status, body["items"][0]["value"].as_str().map(quantity))
}

#[tokio::test]
async fn broker_down_answers_503_and_values_return_after_restart() {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    set_guest_password_env();
    let mut node = RabbitNode::start().await;
    publish_persistent(&node.amqp_url(), "jobs", &["a", "b", "c"]).await;

    let a = Adapter::start(&format!(
        "poll_interval: 250ms\npoll_timeout: 2s\nmax_backoff: 2s\nsources:\n  rabbit:\n    rabbitmq: {{management_url: \"{}\", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD}}\nmetrics:\n  - {{name: total, source: rabbit, measure: total, rabbitmq: {{queue: jobs}}}}\n",
        node.management_url()
    ))
    .await;
    let start = Instant::now();
    while value(&a).await != (200, Some(3.0)) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "value 3 before the stop: {:?}",
            a.metric("total", None).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    node.stop().await;
    let start = Instant::now();
    loop {
        match value(&a).await {
            (503, _) => break,
            (200, Some(v)) => assert_eq!(v, 3.0, "never another number while the broker stops"),
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "503 while the broker is down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.polls(3).await;
    assert_eq!(value(&a).await.0, 503, "still 503 while down");
    assert_eq!(a.get_text("/livez").await.0, 200, "the process stays live");

    node.boot().await;
    let back = Instant::now();
    loop {
        match value(&a).await {
            (200, Some(3.0)) => break,
            (200, Some(v)) => panic!("a wrong value {v} after the restart"),
            _ => {}
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "values return after the restart: {:?}",
            value(&a).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "values returned {:?} after the management API came back",
        back.elapsed()
    );
    a.stop().await;
}
