//! A poll of 10,000 Redis queues (length and oldest age of each: 20,000 series) against the real
//! Redis on 127.0.0.1:6379, with a baseline measured in the same run: the same 20,001 read
//! commands sent as one raw pipeline with the `redis` crate and the replies left unparsed.
//! The ratio is what planning, parsing JSON payloads and building samples cost on top of the
//! round trip itself.
//!
//! `make bench` (or `cargo bench --bench poll`); results in BENCHMARKS.md.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use queue_metrics_adapter::config::Config;
use queue_metrics_adapter::sources::Source;
use queue_metrics_adapter::sources::rabbitmq::{RabbitMq, RabbitMqSource};
use queue_metrics_adapter::sources::redis::{Redis, RedisSource};

const QUEUES: usize = 10_000;

fn redis_url() -> String {
    std::env::var("QMA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

async fn load(prefix: &str) {
    let client = redis::Client::open(redis_url()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (run `make bench`)");
    let (secs, _): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await.expect("TIME");
    let mut p = redis::pipe();
    for i in 0..QUEUES {
        let key = format!("{prefix}queue:{i:05}");
        p.cmd("DEL").arg(&key).ignore();
        for j in 0..3 {
            let job = format!(
                r#"{{"class":"EmbedJob","args":[{j}],"enqueued_at":{}}}"#,
                (secs - 60 + j) * 1000
            );
            p.cmd("LPUSH").arg(&key).arg(job).ignore();
        }
    }
    let () = p.query_async(&mut c).await.expect("load");
}

async fn unload(prefix: &str) {
    let client = redis::Client::open(redis_url()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut p = redis::pipe();
    for i in 0..QUEUES {
        p.cmd("DEL").arg(format!("{prefix}queue:{i:05}")).ignore();
    }
    let () = p.query_async(&mut c).await.expect("unload");
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let prefix = format!("qma-bench:{}:", std::process::id());
    rt.block_on(load(&prefix));
    let yaml = format!(
        "discovery_interval: 1h\npoll_timeout: 30s\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: len, source: jobs, measure: length, redis: {{type: list, pattern: \"{prefix}queue:*\"}}}}\n  - {{name: age, source: jobs, measure: oldest_age_seconds, redis: {{type: list, pattern: \"{prefix}queue:*\", timestamp: {{json_pointer: /enqueued_at, unit: ms}}}}}}\n",
        redis_url()
    );
    let config = Config::from_yaml(&yaml, Path::new("bench.yaml")).expect("config");
    let spec = config
        .spec_of::<Redis>("jobs")
        .expect("jobs is a redis source");
    let mut source = RedisSource::new(&spec, None).expect("source");
    // The first poll discovers the keys (SCAN); the measured polls are the steady state.
    let samples = rt.block_on(source.poll()).expect("poll");
    assert_eq!(samples.len(), 2 * QUEUES);
    assert!(
        samples.iter().all(|s| s.value.is_ok()),
        "every series has a value"
    );

    let client = redis::Client::open(redis_url()).expect("url");
    let mut raw = rt
        .block_on(client.get_multiplexed_async_connection())
        .expect("connect");
    let mut baseline = redis::pipe();
    baseline.cmd("TIME");
    for i in 0..QUEUES {
        let key = format!("{prefix}queue:{i:05}");
        baseline.cmd("LLEN").arg(&key);
        baseline.cmd("LINDEX").arg(&key).arg(-1);
    }

    let mut group = c.benchmark_group("poll_10000_queues");
    group.sample_size(30);
    group.bench_function("raw_pipeline_baseline", |b| {
        b.iter(|| {
            let v: Vec<redis::Value> = rt
                .block_on(baseline.query_async(&mut raw))
                .expect("pipeline");
            v
        });
    });
    group.bench_function("adapter_poll", |b| {
        b.iter(|| rt.block_on(source.poll()).expect("poll"));
    });
    group.finish();
    rt.block_on(unload(&prefix));
}

const RABBIT_QUEUES: usize = 1000;
const MANAGEMENT: &str = "http://127.0.0.1:15672";

/// A poll of 1,000 RabbitMQ queues in one vhost through the management API (two pages of 500),
/// against a baseline in the same run: the same two GETs with `reqwest`, bodies read, not parsed.
fn bench_rabbitmq(c: &mut Criterion) {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let vhost = format!("qma-bench-{}", std::process::id());
    let http = reqwest::Client::new();
    rt.block_on(async {
        let r = http
            .put(format!("{MANAGEMENT}/api/vhosts/{vhost}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
        assert!(
            r.is_ok_and(|r| r.status().is_success()),
            "RabbitMQ management on :15672 (run `make bench`)"
        );
        http.put(format!("{MANAGEMENT}/api/permissions/{vhost}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .expect("permissions");
        let conn = lapin::Connection::connect(
            &format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"),
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        for i in 0..RABBIT_QUEUES {
            let q = format!("embed.{i:04}");
            ch.queue_declare(
                q.as_str().into(),
                lapin::options::QueueDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("declare");
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                b"job",
                lapin::BasicProperties::default().with_timestamp(1_800_000_000),
            )
            .await
            .expect("publish");
        }
    });
    let yaml = format!(
        "poll_timeout: 30s\nsources:\n  rabbit:\n    rabbitmq: {{management_url: \"{MANAGEMENT}\", username: guest, password_env: QMA_BENCH_RABBIT_PASSWORD}}\nmetrics:\n  - {{name: ready, source: rabbit, measure: ready, rabbitmq: {{vhost: \"{vhost}\", queue_pattern: \"^embed\\\\.\"}}}}\n  - {{name: age, source: rabbit, measure: drain_seconds, rabbitmq: {{vhost: \"{vhost}\", queue_pattern: \"^embed\\\\.\"}}}}\n"
    );
    // SAFETY: set once, before any other thread of this benchmark reads the environment.
    unsafe { std::env::set_var("QMA_BENCH_RABBIT_PASSWORD", "guest") };
    let config = Config::from_yaml(&yaml, Path::new("bench.yaml")).expect("config");
    let spec = config
        .spec_of::<RabbitMq>("rabbit")
        .expect("rabbit is a rabbitmq source");
    let mut source = RabbitMqSource::new(&spec, None).expect("source");
    let samples = rt.block_on(source.poll()).expect("poll");
    assert_eq!(samples.len(), 2 * RABBIT_QUEUES);
    assert_eq!(
        source.last_calls(),
        3,
        "1,000 queues take two listing calls, and the first poll reads the broker's rate mode"
    );
    rt.block_on(source.poll()).expect("poll");
    assert_eq!(
        source.last_calls(),
        2,
        "1,000 queues take two management calls"
    );

    let mut group = c.benchmark_group("poll_1000_rabbitmq_queues");
    group.sample_size(20);
    group.bench_function("raw_two_gets_baseline", |b| {
        b.iter(|| {
            rt.block_on(async {
                for page in 1..=2 {
                    let url = format!(
                        "{MANAGEMENT}/api/queues/{vhost}?page={page}&page_size=500&enable_queue_totals=true&columns={}",
                        queue_metrics_adapter::sources::rabbitmq::management::COLUMNS
                    );
                    let body = http
                        .get(url)
                        .basic_auth("guest", Some("guest"))
                        .send()
                        .await
                        .expect("get")
                        .bytes()
                        .await
                        .expect("body");
                    assert!(!body.is_empty());
                }
            })
        });
    });
    group.bench_function("adapter_poll", |b| {
        b.iter(|| rt.block_on(source.poll()).expect("poll"));
    });
    group.finish();
    rt.block_on(async {
        let _ = http
            .delete(format!("{MANAGEMENT}/api/vhosts/{vhost}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
    });
}

criterion_group!(benches, bench, bench_rabbitmq);
criterion_main!(benches);
