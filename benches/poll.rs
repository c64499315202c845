//! A poll of 10,000 Redis queues (length and oldest age of each: 20,000 series) against the real
//! Redis on 127.0.0.1:6379, with a baseline measured in the same run: the same 20,001 read
//! commands sent as one raw pipeline with the `redis` crate and the replies left unparsed.
//! The ratio is what planning, parsing JSON payloads and building samples cost on top of the
//! round trip itself.
//!
//! `make bench` (or `cargo bench --bench poll`); results in BENCHMARKS.md.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use queue_metrics_adapter::config::{Config, SourceConfig};
use queue_metrics_adapter::sources::Source;
use queue_metrics_adapter::sources::redis::RedisSource;

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
    let SourceConfig::Redis(conn) = &config.sources["jobs"];
    let mut source = RedisSource::new("jobs", conn, &config).expect("source");
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

criterion_group!(benches, bench);
criterion_main!(benches);
