//! A mounted ConfigMap changes in place: the adapter applies a valid new config without dropping
//! the API or the values of unchanged metrics, keeps the old one when the new one is invalid, and
//! never serves a changed metric's old values as its new ones.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Adapter, Cleanup, cmd, connect, prefix, redis_url, single_value};

fn config(p: &str, metrics: &[&str]) -> String {
    let mut yaml = format!(
        "poll_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n",
        redis_url()
    );
    for m in metrics {
        yaml.push_str(&format!(
            "  - {{name: {m}, source: jobs, measure: length, redis: {{type: list, key: \"{p}{m}\"}}}}\n"
        ));
    }
    yaml
}

/// Writes the file the way the kubelet updates a ConfigMap volume: a new file renamed over.
fn write(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reloads(adapter: &Adapter, result: &str) -> u64 {
    let (_, text) = adapter.get_text("/metrics").await;
    let line = format!("qma_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_applied_and_an_invalid_one_is_not() {
    let p = prefix("reload");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut conn = connect(&redis_url()).await;
    let _: i64 = cmd(&mut conn, &["RPUSH", &format!("{p}q1"), "a", "b", "c"]).await;
    let _: i64 = cmd(
        &mut conn,
        &["RPUSH", &format!("{p}q2"), "a", "b", "c", "d", "e"],
    )
    .await;
    let dir = std::env::temp_dir().join(format!("qma-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("config.yaml");
    let first = config(&p, &["q1"]);
    write(&path, &first);
    let watched = path.clone();
    let adapter = Arc::new(
        Adapter::start_with(&first, move |s| {
            s.config_path = Some(watched);
            s.config_reload_interval = Duration::from_millis(100);
        })
        .await,
    );
    adapter.ready().await;
    assert_eq!(single_value(&adapter.metric("q1", None).await.1), 3.0);

    // While the config changes, q1 is read continuously: it must never fail.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (adapter, stop, failures) = (adapter.clone(), stop.clone(), failures.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if adapter.metric("q1", None).await.0 != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // A metric is added: served after the reload, q1 keeps its value throughout.
    write(&path, &config(&p, &["q1", "q2"]));
    eventually("q2 to be served", async || {
        adapter.metric("q2", None).await.0 == 200
    })
    .await;
    assert_eq!(single_value(&adapter.metric("q2", None).await.1), 5.0);
    assert_eq!(reloads(&adapter, "applied").await, 1);

    // An invalid file is refused; both metrics keep serving.
    write(&path, "sources: [this is not a config\n");
    eventually("the invalid config to be counted", async || {
        reloads(&adapter, "invalid").await == 1
    })
    .await;
    write(
        &path,
        &config(&p, &["q1", "q2"]).replace("measure: length", "measure: lag"),
    );
    eventually("the second invalid config to be counted", async || {
        reloads(&adapter, "invalid").await == 2
    })
    .await;
    assert_eq!(single_value(&adapter.metric("q1", None).await.1), 3.0);
    assert_eq!(single_value(&adapter.metric("q2", None).await.1), 5.0);
    stop.store(true, Ordering::Relaxed);
    reader.await.expect("reader");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "q1 failed during reloads"
    );

    // A metric is removed: gone from the API.
    write(&path, &config(&p, &["q2"]));
    eventually("q1 to be gone", async || {
        adapter.metric("q1", None).await.0 == 404
    })
    .await;
    assert_eq!(single_value(&adapter.metric("q2", None).await.1), 5.0);
    assert_eq!(reloads(&adapter, "applied").await, 2);

    let _ = std::fs::remove_dir_all(&dir);
    match Arc::try_unwrap(adapter) {
        Ok(a) => a.stop().await,
        Err(_) => panic!("adapter still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_that_reads_another_key_after_a_reload_never_serves_the_old_keys_value() {
    // A private server, so that pausing it disturbs no other test.
    let redis = common::RedisProcess::start().await;
    let mut conn = connect(&redis.url()).await;
    let _: i64 = cmd(&mut conn, &["RPUSH", "old", "a", "b", "c"]).await;
    let _: i64 = cmd(&mut conn, &["RPUSH", "new", "a", "b", "c", "d", "e"]).await;
    let yaml = |key: &str| {
        format!(
            "poll_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: q, source: jobs, measure: length, redis: {{type: list, key: {key}}}}}\n",
            redis.url()
        )
    };
    let dir = std::env::temp_dir().join(format!("qma-reload-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("config.yaml");
    write(&path, &yaml("old"));
    let watched = path.clone();
    let adapter = Adapter::start_with(&yaml("old"), move |s| {
        s.config_path = Some(watched);
        s.config_reload_interval = Duration::from_millis(100);
    })
    .await;
    adapter.ready().await;
    assert_eq!(single_value(&adapter.metric("q", None).await.1), 3.0);

    // Hold the new config's first poll back, so the moment between the reload and that poll
    // is long enough to look at.
    let _: String = cmd(&mut conn, &["CLIENT", "PAUSE", "2000", "ALL"]).await;
    write(&path, &yaml("new"));
    eventually("the new config to be applied", async || {
        reloads(&adapter, "applied").await == 1
    })
    .await;
    let (status, body) = adapter.metric("q", None).await;
    assert_eq!(
        status, 503,
        "the old key's 3 must not be served as the new key's value: {body}"
    );
    eventually("the new key to be read", async || {
        let (status, body) = adapter.metric("q", None).await;
        status == 200 && single_value(&body) == 5.0
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_file_is_read_again_and_the_source_reconnects_with_it() {
    let redis = common::RedisProcess::start_with(|_| {
        ["--port", "{port}", "--requirepass", "first-secret"]
            .map(String::from)
            .to_vec()
    })
    .await;
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let admin = |password: &'static str| {
        let url = format!("redis://:{password}@127.0.0.1:{}/0", redis.port);
        async move { connect(&url).await }
    };
    let mut conn = admin("first-secret").await;
    let _: i64 = cmd(&mut conn, &["RPUSH", "jobs", "a", "b"]).await;
    let dir = std::env::temp_dir().join(format!("qma-reload-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let password = dir.join("password");
    write(&password, "first-secret\n");
    let path = dir.join("config.yaml");
    let yaml = format!(
        "poll_interval: 200ms\nmax_backoff: 500ms\nsources:\n  jobs:\n    redis: {{url: \"{url}\", password_file: \"{}\"}}\nmetrics:\n  - {{name: q, source: jobs, measure: length, redis: {{type: list, key: jobs}}}}\n",
        password.display()
    );
    write(&path, &yaml);
    let watched = path.clone();
    let adapter = Adapter::start_with(&yaml, move |s| {
        s.config_path = Some(watched);
        s.config_reload_interval = Duration::from_millis(100);
    })
    .await;
    adapter.ready().await;
    assert_eq!(single_value(&adapter.metric("q", None).await.1), 2.0);

    // The Secret is rotated: the server takes the new password and drops its connections.
    let _: String = cmd(
        &mut conn,
        &["CONFIG", "SET", "requirepass", "second-secret"],
    )
    .await;
    let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut conn)
        .await;
    eventually("the old password to be refused", async || {
        adapter.metric("q", None).await.0 == 503
    })
    .await;
    write(&password, "second-secret\n");
    eventually("the new password to be read and used", async || {
        let (status, body) = adapter.metric("q", None).await;
        status == 200 && single_value(&body) == 2.0
    })
    .await;
    let (_, metrics) = adapter.get_text("/metrics").await;
    assert!(!metrics.contains("second-secret") && !metrics.contains("first-secret"));
    let _ = std::fs::remove_dir_all(&dir);
    adapter.stop().await;
}
