//! Wake-up latency from zero for a PostgreSQL job table, against the PostgreSQL on
//! 127.0.0.1:5432 and the adapter in-process: River's tables (`tests/fixtures/postgres/`) in a
//! database of their own, the queue empty for 400 ms, then one job inserted and
//! `public.river_insert` notified in the same transaction, as River's client does; the time
//! from the commit until the external metrics API serves 1. The poll interval is 30 s, so only
//! the `LISTEN` session explains an answer within it.
//!
//! `cargo bench --bench postgres_wake` runs 60 triggers (p50/p95 printed); `cargo test` runs it
//! once with 3. Figures go in BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::postgres::TestDb;
use common::{Adapter, quantity};

/// How long the queue stays at zero before the job that wakes it.
const IDLE: Duration = Duration::from_millis(400);

async fn served(a: &Adapter) -> Option<f64> {
    let (status, body) = a.metric("waiting", None).await;
    (status == 200)
        .then(|| body["items"][0]["value"].as_str().map(quantity))
        .flatten()
}

/// Waits (bounded by 10 s, a third of the poll interval) until the metric serves `want`.
async fn until_served(a: &Adapter, want: f64) -> Instant {
    let start = Instant::now();
    loop {
        if served(a).await == Some(want) {
            return Instant::now();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never served {want}: the LISTEN wake did not come"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let triggers = if full { 60 } else { 3 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let db = TestDb::create("bench_wake").await;
        db.apply_fixture("river.sql").await;
        db.exec(&format!(
            "GRANT USAGE ON SCHEMA public TO {r}; GRANT SELECT ON river_job, river_migration TO {r}",
            r = db.reader
        ))
        .await;
        let a = Adapter::start(&format!(
            "poll_interval: 30s\nmax_staleness: 2m\nsources:\n  db:\n    {}\nmetrics:\n  - {{name: waiting, source: db, measure: length, postgres: {{library: river, queue: emb}}}}\n",
            db.source_yaml()
        ))
        .await;
        a.ready().await;
        until_served(&a, 0.0).await;
        let admin = db.admin().await;
        let mut took = Vec::with_capacity(triggers);
        for _ in 0..triggers {
            tokio::time::sleep(IDLE).await;
            admin
                .batch_execute(
                    "BEGIN; INSERT INTO river_job (args, kind, queue, state, scheduled_at) VALUES ('{}', 'embed', 'emb', 'available', now()); \
                     NOTIFY \"public.river_insert\", '{\"queue\": \"emb\"}'; COMMIT",
                )
                .await
                .expect("insert and notify");
            let committed = Instant::now();
            took.push(until_served(&a, 1.0).await - committed);
            // Back to zero as a worker would leave it (the delete notifies nothing: the next
            // wake-up or poll reads it).
            admin
                .batch_execute("DELETE FROM river_job")
                .await
                .expect("drain");
            admin
                .batch_execute("NOTIFY \"public.river_insert\", '{\"queue\": \"emb\"}'")
                .await
                .expect("notify");
            until_served(&a, 0.0).await;
        }
        a.stop().await;
        took.sort();
        let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        println!(
            "postgres LISTEN wake (River, poll_interval 30s): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms (n={})",
            at(0.5),
            at(0.95),
            at(1.0),
            took.len()
        );
    });
}
