//! What a missing Redis key is served as, against the real server. Redis deletes an empty list
//! or sorted set, so a missing one is an empty queue (`0`), and a key found by a pattern stays
//! polled after it empties; an exact key that has never existed is still `0` but flagged
//! (`check`, a log line, `/metrics`); Redis never deletes a stream by itself, so a missing
//! stream is an error for every stream measure. Each test uses its own key prefix.

mod common;

use std::time::{Duration, Instant};

use common::{Adapter, Cleanup, cmd, connect, prefix, redis_url, single_value, value_is};
use queue_metrics_adapter::check;
use queue_metrics_adapter::config::Config;

fn config(head: &str, metrics: &str) -> String {
    format!(
        "poll_interval: 200ms\n{head}sources:\n  jobs:\n    redis: {{url: \"{}\", db: 0}}\nmetrics:\n{metrics}",
        redis_url()
    )
}

/// How long a value may take to follow a change (polls are 200 ms apart).
const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_missing_stream_is_an_error_for_every_stream_measure_naming_key_and_db() {
    let p = prefix("stream-absent");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let present = format!("{p}present");
    cmd::<String>(
        &mut c,
        &["XGROUP", "CREATE", &present, "g", "$", "MKSTREAM"],
    )
    .await;
    cmd::<String>(&mut c, &["XADD", &present, "*", "doc", "1"]).await;
    let absent = format!("{p}absent");
    let measures = [
        "length",
        "lag",
        "pending",
        "oldest_pending_age_seconds",
        "oldest_unprocessed_age_seconds",
    ];
    let mut metrics = String::new();
    for (i, m) in measures.iter().enumerate() {
        metrics.push_str(&format!(
            "  - {{name: absent-{i}, source: jobs, measure: {m}, redis: {{type: stream, key: \"{absent}\", group: g}}}}\n  - {{name: present-{i}, source: jobs, measure: {m}, redis: {{type: stream, key: \"{present}\", group: g}}}}\n"
        ));
    }
    let a = Adapter::start(&config("", &metrics)).await;
    a.polls(1).await;
    for (i, m) in measures.iter().enumerate() {
        let (status, body) = a.metric(&format!("absent-{i}"), None).await;
        assert_eq!(status, 503, "{m} of a missing stream must not be 0: {body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(
            message.contains(&format!("stream {absent:?} does not exist in db 0")),
            "{m}: {body}"
        );
        let (status, body) = a.metric(&format!("present-{i}"), None).await;
        assert_eq!(status, 200, "{m} of an existing stream: {body}");
    }
    assert_eq!(single_value(&a.metric("present-0", None).await.1), 1.0);
    assert_eq!(single_value(&a.metric("present-1", None).await.1), 1.0);
    a.stop().await;
}

#[tokio::test]
async fn an_exact_key_that_never_existed_is_zero_but_flagged_in_check_and_metrics() {
    let p = prefix("typo");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let real = format!("{p}queue:embeddings");
    let typo = format!("{p}queue:embedings");
    cmd::<i64>(&mut c, &["LPUSH", &real, "job"]).await;
    let yaml = config(
        "",
        &format!(
            "  - {{name: real, source: jobs, measure: length, redis: {{type: list, key: \"{real}\"}}}}\n  - {{name: typo, source: jobs, measure: length, redis: {{type: list, key: \"{typo}\"}}}}\n  - {{name: typo-delay, source: jobs, measure: ready, redis: {{type: zset, key: \"{typo}:delayed\"}}}}\n"
        ),
    );

    let report =
        check::run(&Config::from_yaml(&yaml, std::path::Path::new("t.yaml")).expect("valid"))
            .await
            .expect("check runs");
    let row = |metric: &str| {
        report
            .table
            .lines()
            .find(|l| l.starts_with(&format!("{metric} ")))
            .unwrap_or_else(|| panic!("no row for {metric}:\n{}", report.table))
            .to_string()
    };
    assert!(row("typo").contains(check::UNSEEN_NOTE), "{}", report.table);
    assert!(
        row("typo-delay").contains(check::UNSEEN_NOTE),
        "{}",
        report.table
    );
    assert!(
        !row("real").contains(check::UNSEEN_NOTE),
        "{}",
        report.table
    );
    assert_eq!(
        report.failed, 0,
        "an honest 0 is no error: {}",
        report.table
    );

    let a = Adapter::start(&yaml).await;
    a.polls(1).await;
    let (status, body) = a.metric("typo", None).await;
    assert_eq!((status, single_value(&body)), (200, 0.0), "{body}");
    let (_, metrics) = a.get_text("/metrics").await;
    for want in [
        "qma_metric_unseen_keys{metric=\"typo\"} 1",
        "qma_metric_unseen_keys{metric=\"typo-delay\"} 1",
        "qma_metric_unseen_keys{metric=\"real\"} 0",
    ] {
        assert!(metrics.contains(want), "/metrics lacks {want}:\n{metrics}");
    }
    // Once the key has existed, its emptiness is what Redis says it is: no longer flagged.
    cmd::<i64>(&mut c, &["LPUSH", &typo, "job"]).await;
    a.wait_for("typo", None, LIMIT, value_is(1.0)).await;
    cmd::<i64>(&mut c, &["DEL", &typo]).await;
    a.wait_for("typo", None, LIMIT, value_is(0.0)).await;
    let (_, metrics) = a.get_text("/metrics").await;
    assert!(
        metrics.contains("qma_metric_unseen_keys{metric=\"typo\"} 0"),
        "{metrics}"
    );
    a.stop().await;
}

#[tokio::test]
async fn a_pattern_key_that_empties_keeps_its_series_and_a_refill_is_seen_on_the_next_poll() {
    let p = prefix("pattern-drain");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let embed = format!("{p}queue:embeddings");
    cmd::<i64>(&mut c, &["LPUSH", &embed, "job"]).await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}queue:rerank"), "a", "b"]).await;
    let a = Adapter::start(&config(
        "discovery_interval: 3s\n",
        &format!(
            "  - {{name: sidekiq_queue_length, source: jobs, measure: length, redis: {{type: list, pattern: \"{p}queue:*\"}}}}\n"
        ),
    ))
    .await;
    a.polls(1).await;
    let sel = Some("queue=embeddings");
    a.wait_for("sidekiq_queue_length", sel, LIMIT, value_is(1.0))
        .await;
    cmd::<i64>(&mut c, &["DEL", &embed]).await;
    a.wait_for("sidekiq_queue_length", sel, LIMIT, value_is(0.0))
        .await;
    // A discovery runs meanwhile; its SCAN no longer finds the deleted key.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, body) = a.metric("sidekiq_queue_length", sel).await;
    assert_eq!(
        (status, body["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "the drained queue is still served: {body}"
    );
    assert_eq!(single_value(&body), 0.0, "as 0: {body}");
    let refilled = Instant::now();
    cmd::<i64>(&mut c, &["LPUSH", &embed, "job"]).await;
    a.wait_for("sidekiq_queue_length", sel, LIMIT, value_is(1.0))
        .await;
    assert!(
        refilled.elapsed() < Duration::from_millis(1500),
        "seen by the next poll (200 ms), not by the next discovery (3 s)"
    );
    a.stop().await;
}

#[tokio::test]
async fn a_pattern_key_missing_longer_than_the_retention_is_dropped_and_keda_reads_zero() {
    let p = prefix("pattern-retention");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    let only = format!("{p}q:only");
    cmd::<i64>(&mut c, &["LPUSH", &only, "job"]).await;
    let a = Adapter::start(&config(
        "discovery_interval: 200ms\npattern_key_retention: 1s\n",
        &format!(
            "  - {{name: queues, source: jobs, measure: length, redis: {{type: list, pattern: \"{p}q:*\"}}}}\n"
        ),
    ))
    .await;
    a.wait_for("queues", None, LIMIT, value_is(1.0)).await;
    cmd::<i64>(&mut c, &["DEL", &only]).await;
    let deleted = Instant::now();
    a.wait_for("queues", None, LIMIT, value_is(0.0)).await;
    let (status, body) = a
        .wait_for("queues", None, LIMIT, |status, body| {
            status == 200 && body["items"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    assert!(
        deleted.elapsed() >= Duration::from_secs(1),
        "kept for the retention first: {status} {body}"
    );
    // Nothing matches on a healthy source: for KEDA an empty backlog, 0 and inactive.
    let (status, body) = a.get_json("/keda/v1/namespaces/default/queues").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["value"].as_f64(),
            body["active"].as_bool(),
            body["series"].as_u64()
        ),
        (Some(0.0), Some(false), Some(0)),
        "{body}"
    );
    a.stop().await;
}
