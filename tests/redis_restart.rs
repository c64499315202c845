//! Killing Redis never produces a `0` or a crash; values return once it is back.
//! Uses a private `redis-server` so that stopping it disturbs no other test.

mod common;

use std::time::{Duration, Instant};

use common::{Adapter, RedisProcess, cmd, connect, single_value};

#[tokio::test]
async fn redis_down_answers_503_and_recovers_within_an_interval_plus_backoff() {
    let mut redis = RedisProcess::start().await;
    let mut c = connect(&redis.url()).await;
    cmd::<i64>(&mut c, &["LPUSH", "jobs", "a", "b", "c"]).await;
    let a = Adapter::start(&format!(
        "poll_interval: 200ms\npoll_timeout: 1s\nmax_backoff: 1s\nsources:\n  r:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: q, source: r, measure: length, redis: {{type: list, key: jobs}}}}\n",
        redis.url()
    ))
    .await;
    a.polls(1).await;
    assert_eq!(single_value(&a.metric("q", None).await.1), 3.0);

    redis.kill();
    // Every answer while Redis is down is either the last good value from before the kill was
    // noticed or a 503; never a 0, and the process keeps serving.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_503 = false;
    while Instant::now() < deadline && !saw_503 {
        let (status, body) = a.metric("q", None).await;
        match status {
            503 => {
                saw_503 = true;
                assert_eq!(body["reason"], "ServiceUnavailable");
            }
            200 => assert_eq!(
                single_value(&body),
                3.0,
                "never another number while down: {body}"
            ),
            other => panic!("unexpected status {other}: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_503, "the API answered 503 while Redis was down");
    a.polls(2).await;
    assert_eq!(
        a.metric("q", None).await.0,
        503,
        "still 503 after more failed polls"
    );
    assert_eq!(
        a.get_text("/livez").await.0,
        200,
        "a failing source does not make the process unhealthy"
    );

    // Back, empty (it keeps nothing), then with new data.
    redis.restart().await;
    let mut c = connect(&redis.url()).await;
    cmd::<i64>(&mut c, &["LPUSH", "jobs", "x", "y"]).await;
    let back = Instant::now();
    let mut value = None;
    while back.elapsed() < Duration::from_secs(5) {
        let (status, body) = a.metric("q", None).await;
        if status == 200 {
            value = Some(single_value(&body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_in = back.elapsed();
    assert_eq!(value, Some(2.0), "the right value after Redis returns");
    // One poll interval (200 ms) + the largest backoff (1 s) + a poll.
    assert!(
        recovered_in < Duration::from_secs(3),
        "recovered in {recovered_in:?}"
    );
    eprintln!("recovered {recovered_in:?} after Redis came back");
    a.stop().await;
}

/// A short-lived token (ElastiCache IAM, Entra ID) that a sidecar rewrites: the source reads its
/// `password_file` again on every reconnect, so once the server wants the new token and drops
/// the old connection, the next connection logs in with it, with no config reload involved (the
/// source is driven directly here, without the app's file watch).
#[tokio::test]
async fn a_rewritten_password_file_is_used_by_the_next_connection() {
    use queue_metrics_adapter::config::Config;
    use queue_metrics_adapter::sources::Source;
    use queue_metrics_adapter::sources::redis::{Redis, RedisSource};

    let redis = RedisProcess::start_with(|_| {
        vec![
            "--port".into(),
            "{port}".into(),
            "--requirepass".into(),
            "token-1".into(),
        ]
    })
    .await;
    let file = redis.dir.join("token");
    std::fs::write(&file, "token-1\n").expect("token file");
    let yaml = format!(
        "sources:\n  r:\n    redis: {{url: \"redis://127.0.0.1:{}/0\", password_file: \"{}\"}}\nmetrics:\n  - {{name: q, source: r, measure: length, redis: {{type: list, key: jobs}}}}\n",
        redis.port,
        file.display()
    );
    let config = Config::from_yaml(&yaml, std::path::Path::new("t.yaml")).expect("config");
    let spec = config.spec_of::<Redis>("r").expect("redis source");
    let mut source = RedisSource::new(&spec, None).expect("source");
    let mut admin = connect(&format!("redis://:token-1@127.0.0.1:{}/0", redis.port)).await;
    cmd::<i64>(&mut admin, &["LPUSH", "jobs", "a", "b"]).await;
    let value =
        |samples: &[queue_metrics_adapter::model::Sample]| samples[0].value.as_ref().ok().copied();
    assert_eq!(value(&source.poll().await.expect("poll")), Some(2.0));

    // The token rotates: the server wants the new one, the file holds it, old sessions end.
    cmd::<String>(&mut admin, &["CONFIG", "SET", "requirepass", "token-2"]).await;
    std::fs::write(&file, "token-2\n").expect("token file");
    cmd::<i64>(
        &mut admin,
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    )
    .await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let outcome = source.poll().await;
        let ok = outcome.as_ref().ok().and_then(|s| value(s));
        outcomes.push(outcome.map(|_| ()).map_err(|e| e.to_string()));
        if ok == Some(2.0) {
            return;
        }
    }
    panic!("the new token was never used: {outcomes:?}");
}
