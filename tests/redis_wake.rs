//! Waking on a push: with a 30 s poll interval, a job pushed into an empty list, sorted set or
//! stream, or into a new key of a pattern, is served within seconds (the change report wakes
//! the poll), long before the next poll would run. A queue taking a burst of pushes costs at
//! most `max_polls_per_second` extra polls. A server that refuses tracking (an ACL without
//! `client|tracking`) is polled alone and `/metrics` says so.

mod common;

use std::time::{Duration, Instant};

use common::{Adapter, Cleanup, RedisProcess, cmd, connect, prefix, redis_url, value_is};

/// Long enough that a value seen within it came from a wake, not from the interval.
const INTERVAL: &str = "30s";
const WITHIN: Duration = Duration::from_secs(5);

fn counter(metrics: &str, name: &str, source: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(&format!("{{source=\"{source}\"}} "))?;
        rest.trim().parse().ok()
    })
}

#[tokio::test]
async fn a_push_into_an_empty_queue_is_served_long_before_the_next_poll() {
    let p = prefix("wake");
    let _cleanup = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    // The stream and its group exist, empty: Redis never deletes a stream, and a missing one
    // is an error rather than 0.
    cmd::<String>(
        &mut c,
        &[
            "XGROUP",
            "CREATE",
            &format!("{p}events"),
            "workers",
            "$",
            "MKSTREAM",
        ],
    )
    .await;
    let a = Adapter::start(&format!(
        "poll_interval: {INTERVAL}\nsources:\n  jobs:\n    redis: {{url: \"{url}\"}}\nmetrics:\n  - {{name: list, source: jobs, measure: length, redis: {{type: list, key: \"{p}list\"}}}}\n  - {{name: delayed, source: jobs, measure: length, redis: {{type: zset, key: \"{p}delayed\"}}}}\n  - {{name: stream, source: jobs, measure: lag, redis: {{type: stream, key: \"{p}events\", group: workers}}}}\n  - {{name: pattern, source: jobs, measure: length, redis: {{type: list, pattern: \"{p}q:*\"}}}}\n",
        url = redis_url()
    ))
    .await;
    a.ready().await;
    for metric in ["list", "delayed", "stream"] {
        a.wait_for(metric, None, WITHIN, value_is(0.0)).await;
    }
    let started = Instant::now();
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}list"), "job"]).await;
    a.wait_for("list", None, WITHIN, value_is(1.0)).await;
    cmd::<i64>(&mut c, &["ZADD", &format!("{p}delayed"), "1", "job"]).await;
    a.wait_for("delayed", None, WITHIN, value_is(1.0)).await;
    cmd::<String>(&mut c, &["XADD", &format!("{p}events"), "*", "job", "1"]).await;
    a.wait_for("stream", None, WITHIN, value_is(1.0)).await;
    // A key the pattern's discovery has never seen: the report names it, discovery runs now.
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}q:new"), "a", "b"]).await;
    a.wait_for("pattern", Some("queue=new"), WITHIN, value_is(2.0))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "all four were seen before the 30 s poll: {:?}",
        started.elapsed()
    );
    let (_, metrics) = a.get_text("/metrics").await;
    assert_eq!(
        counter(&metrics, "qma_push_watching", "jobs"),
        Some(1.0),
        "{metrics}"
    );
    assert!(counter(&metrics, "qma_wake_polls_total", "jobs").unwrap_or(0.0) >= 4.0);
    a.stop().await;
}

#[tokio::test]
async fn a_burst_of_pushes_costs_at_most_the_configured_extra_polls() {
    let p = prefix("wake-burst");
    let _cleanup = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = Adapter::start(&format!(
        "poll_interval: {INTERVAL}\nsources:\n  busy:\n    redis: {{url: \"{url}\", wake: {{max_polls_per_second: 4}}}}\nmetrics:\n  - {{name: busy, source: busy, measure: length, redis: {{type: list, key: \"{p}busy\"}}}}\n",
        url = redis_url()
    ))
    .await;
    a.ready().await;
    let wakes = || async {
        let (_, metrics) = a.get_text("/metrics").await;
        counter(&metrics, "qma_wake_polls_total", "busy").unwrap_or(0.0)
    };
    let before = wakes().await;
    let mut c = connect(&redis_url()).await;
    let started = Instant::now();
    let mut pushes = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let mut pipe = redis::pipe();
        for _ in 0..50 {
            pipe.cmd("LPUSH")
                .arg(format!("{p}busy"))
                .arg("job")
                .ignore();
        }
        let () = pipe.query_async(&mut c).await.expect("push");
        pushes += 50;
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let extra = wakes().await - before;
    assert!(pushes > 1000, "only {pushes} pushes");
    // 4 a second over the burst and the settling time, plus one full bucket (4).
    assert!(
        extra >= 1.0 && extra <= (elapsed + 0.6) * 4.0 + 4.0 + 1.0,
        "{extra} wake polls for {pushes} pushes in {elapsed:.1} s"
    );
    a.wait_for("busy", None, WITHIN, value_is(pushes as f64))
        .await;
    a.stop().await;
}

#[tokio::test]
async fn an_acl_without_client_tracking_falls_back_to_polling_and_says_so() {
    let redis = RedisProcess::start().await;
    let mut admin = connect(&redis.url()).await;
    cmd::<String>(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            ">reader-pw",
            "~*",
            "+@read",
            "+@connection",
            "+time",
            "+info",
            "-client|tracking",
        ],
    )
    .await;
    let a = Adapter::start(&format!(
        "poll_interval: 500ms\nsources:\n  limited:\n    redis: {{url: \"redis://reader:reader-pw@127.0.0.1:{}/0\"}}\nmetrics:\n  - {{name: q, source: limited, measure: length, redis: {{type: list, key: jobs}}}}\n",
        redis.port
    ))
    .await;
    a.ready().await;
    let (_, metrics) = a.get_text("/metrics").await;
    assert_eq!(
        counter(&metrics, "qma_push_watching", "limited"),
        Some(0.0),
        "{metrics}"
    );
    // Polling still serves the truth.
    cmd::<i64>(&mut admin, &["LPUSH", "jobs", "a", "b", "c"]).await;
    a.wait_for("q", None, WITHIN, value_is(3.0)).await;
    a.stop().await;
}

/// The tracking connection is killed (a proxy restart, `CLIENT KILL`): the source is polled
/// alone for a moment, re-makes its watch at once, and pushes wake it again.
#[tokio::test]
async fn a_lost_tracking_connection_is_remade_and_wakes_again() {
    let redis = RedisProcess::start().await;
    let mut admin = connect(&redis.url()).await;
    let a = Adapter::start(&format!(
        "poll_interval: {INTERVAL}\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: q, source: jobs, measure: length, redis: {{type: list, key: jobs}}}}\n",
        redis.url()
    ))
    .await;
    a.ready().await;
    let watching = || async {
        let (_, metrics) = a.get_text("/metrics").await;
        counter(&metrics, "qma_push_watching", "jobs")
    };
    let tracking_ids = |list: String| -> Vec<String> {
        list.lines()
            .filter(|l| {
                l.split(' ')
                    .any(|f| f.strip_prefix("flags=").is_some_and(|x| x.contains('t')))
            })
            .filter_map(|l| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix("id="))
                    .map(String::from)
            })
            .collect()
    };
    let ids = tracking_ids(cmd(&mut admin, &["CLIENT", "LIST"]).await);
    assert_eq!(ids.len(), 1, "one tracking connection");
    cmd::<i64>(&mut admin, &["CLIENT", "KILL", "ID", &ids[0]]).await;
    let start = Instant::now();
    loop {
        let again = tracking_ids(cmd(&mut admin, &["CLIENT", "LIST"]).await);
        if again.len() == 1 && again != ids && watching().await == Some(1.0) {
            break;
        }
        assert!(start.elapsed() < WITHIN, "tracking not re-made: {again:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cmd::<i64>(&mut admin, &["LPUSH", "jobs", "a"]).await;
    a.wait_for("q", None, WITHIN, value_is(1.0)).await;
    a.stop().await;
}

/// A pattern with no literal prefix (`*:jobs`) could only be watched by watching every key: the
/// source is polled alone, `/metrics` says so, and its values are still served.
#[tokio::test]
async fn a_pattern_without_a_literal_prefix_is_polled_alone() {
    let redis = RedisProcess::start().await;
    let mut c = connect(&redis.url()).await;
    cmd::<i64>(&mut c, &["LPUSH", "embed:jobs", "a"]).await;
    let a = Adapter::start(&format!(
        "poll_interval: 500ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: q, source: jobs, measure: length, redis: {{type: list, pattern: \"*:jobs\"}}}}\n",
        redis.url()
    ))
    .await;
    a.ready().await;
    a.wait_for("q", Some("queue=embed"), WITHIN, value_is(1.0))
        .await;
    let (_, metrics) = a.get_text("/metrics").await;
    assert_eq!(
        counter(&metrics, "qma_push_watching", "jobs"),
        Some(0.0),
        "{metrics}"
    );
    a.stop().await;
}

/// A job library's queues, `*`: a job pushed to a known queue, and a new queue the library
/// lists in its registry (Sidekiq's `queues`), are both served long before the next poll or
/// discovery. Sidekiq's keys take no prefix: a private server.
#[tokio::test]
async fn a_push_to_a_library_queue_and_a_new_queue_in_its_registry_wake_the_poll() {
    let server = RedisProcess::start().await;
    let mut c = connect(&server.url()).await;
    cmd::<i64>(&mut c, &["SADD", "queues", "embed"]).await;
    let a = Adapter::start(&format!(
        "poll_interval: {INTERVAL}\ndiscovery_interval: {INTERVAL}\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: sidekiq, source: jobs, measure: length, redis: {{library: sidekiq, queue: \"*\"}}}}\n",
        server.url()
    ))
    .await;
    a.ready().await;
    a.wait_for("sidekiq", Some("queue=embed"), WITHIN, value_is(0.0))
        .await;
    let started = Instant::now();
    cmd::<i64>(&mut c, &["LPUSH", "queue:embed", "{}"]).await;
    a.wait_for("sidekiq", Some("queue=embed"), WITHIN, value_is(1.0))
        .await;
    // As Sidekiq's client does for a queue it has not seen: SADD, then LPUSH.
    cmd::<i64>(&mut c, &["SADD", "queues", "rerank"]).await;
    cmd::<i64>(&mut c, &["LPUSH", "queue:rerank", "{}", "{}"]).await;
    a.wait_for("sidekiq", Some("queue=rerank"), WITHIN, value_is(2.0))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "both were seen before the 30 s poll: {:?}",
        started.elapsed()
    );
    a.stop().await;
}
