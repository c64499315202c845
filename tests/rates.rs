//! Rates over a window, from the counters brokers and libraries keep, against real servers fed
//! by real clients at known paces: a stream written with `XADD` and read and acknowledged by a
//! consumer group (`XREADGROUP`/`XACK`), a RabbitMQ queue with a publisher and an acknowledging
//! consumer, BullMQ's and Sidekiq's own clients and workers. Each served rate is within 15 % of
//! what the clients did over the same window (their own records of when each job entered or
//! finished), `drain_seconds` is the waiting work over the served completion rate, and when
//! the clients stop the rates fall to 0 and a backlog nothing drains is `max_drain_seconds`.
//! What cannot be counted answers an error naming why, never 0.

mod common;

use std::time::{Duration, Instant};

use common::job_libraries::{check_error, node, ruby, sidekiq_worker};
use common::kube_stub::{KubeStub, deployment};
use common::paced::{PacedRabbit, PacedStream, group_stream, served, waiting, work_one};
use common::rabbit::{RabbitNode, set_guest_password_env};
use common::{
    Adapter, Cleanup, RedisProcess, cmd, connect, prefix, redis_url, server_now_ms, value_is,
};
use queue_metrics_adapter::api::keda::metadata;
use queue_metrics_adapter::api::keda::pb::external_scaler_client::ExternalScalerClient;
use queue_metrics_adapter::api::keda::pb::{GetMetricsRequest, ScaledObjectRef};

/// How far a served rate may be from the truth.
const TOLERANCE: f64 = 0.15;

/// Waits (up to `limit`) until `metric` is within [`TOLERANCE`] of `truth()` (asked anew at
/// each reading) and returns the served value.
async fn close_to(a: &Adapter, metric: &str, limit: Duration, truth: impl AsyncFn() -> f64) -> f64 {
    let start = Instant::now();
    loop {
        let got = served(a, metric).await;
        let want = truth().await;
        if let Ok(v) = got
            && (v - want).abs() <= TOLERANCE * want
        {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "{metric}: served {got:?}, truth {want} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// KEDA's view of `metric`: GetMetrics over gRPC, and the metrics-api JSON.
async fn keda_values(a: &Adapter, metric: &str) -> (f64, f64) {
    let addr = a
        .running
        .as_ref()
        .and_then(|r| r.grpc_addr)
        .expect("gRPC listens");
    let mut grpc = ExternalScalerClient::connect(format!("http://{addr}"))
        .await
        .expect("gRPC connect");
    let object = ScaledObjectRef {
        name: "embed-workers".into(),
        namespace: "default".into(),
        scaler_metadata: metadata(&[("metricName", metric), ("targetValue", "5")]),
    };
    let values = grpc
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object),
            metric_name: metric.into(),
        })
        .await
        .expect("GetMetrics")
        .into_inner();
    let (status, body) = a
        .get_json(&format!("/keda/v1/namespaces/default/{metric}"))
        .await;
    assert_eq!(status, 200, "{body}");
    (
        values.metric_values[0].metric_value_float,
        body["value"].as_f64().expect("value"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_group_serves_its_arrival_and_completion_rates_and_drain_time() {
    let url = redis_url();
    let (clean, stream, mut c) = group_stream("rates-stream").await;
    let p = clean.prefix.clone();
    // A group created at an ID of its own has no entries-read until its first delivery.
    let mid = format!("{p}mid");
    for id in ["1-1", "2-1", "3-1"] {
        cmd::<String>(&mut c, &["XADD", &mid, id, "n", "1"]).await;
    }
    cmd::<String>(&mut c, &["XGROUP", "CREATE", &mid, "late", "2-1"]).await;
    let config = format!(
        r#"poll_interval: 200ms
sources:
  jobs:
    redis: {{url: "{url}", wake: {{enabled: false}}, max_drain_seconds: 3600}}
metrics:
  - {{name: arrivals, source: jobs, measure: arrival_rate, window: 3s, redis: {{type: stream, key: "{stream}"}}}}
  - {{name: completions, source: jobs, measure: completion_rate, window: 3s, redis: {{type: stream, key: "{stream}", group: workers}}}}
  - {{name: drain, source: jobs, measure: drain_seconds, window: 3s, redis: {{type: stream, key: "{stream}", group: workers}}}}
  - {{name: late-completions, source: jobs, measure: completion_rate, window: 3s, redis: {{type: stream, key: "{mid}", group: late}}}}
  - {{name: late-drain, source: jobs, measure: drain_seconds, window: 3s, redis: {{type: stream, key: "{mid}", group: late}}}}
"#
    );
    let a = Adapter::start(&config).await;

    // 20 entries a second in; 10 a second read and acknowledged, one at a time.
    let clients = PacedStream::start(&url, &stream);
    let (added, acked) = (clients.added.clone(), clients.acked.clone());
    let window = Duration::from_secs(3);
    let limit = Duration::from_secs(20);
    // Not before a full window of both has passed.
    tokio::time::sleep(window + Duration::from_millis(500)).await;
    close_to(&a, "arrivals", limit, async || added.rate(window)).await;
    let done = close_to(&a, "completions", limit, async || acked.rate(window)).await;

    // The drain time is what waits (undelivered + pending) over the served completion rate.
    let start = Instant::now();
    loop {
        let rate = served(&a, "completions").await;
        let drain = served(&a, "drain").await;
        let w = waiting(&mut c, &stream).await;
        if let (Ok(rate), Ok(drain)) = (&rate, &drain) {
            let formula = w / rate;
            if (drain - formula).abs() <= TOLERANCE * formula {
                break;
            }
        }
        assert!(
            start.elapsed() < limit,
            "drain {drain:?} is not waiting {w} over completion rate {rate:?} (served {done})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // KEDA is given the same measures.
    let (grpc, http) = keda_values(&a, "arrivals").await;
    for v in [grpc, http] {
        assert!(
            (v - 20.0).abs() <= 20.0 * TOLERANCE,
            "KEDA's arrival rate {v}, the producer's 20/s"
        );
    }

    // A group whose entries-read Redis cannot tell: an error naming why, never 0.
    check_error(&a, "late-completions", "entries-read", limit).await;
    check_error(&a, "late-drain", "refusing to guess", limit).await;

    // Everything stops: no arrivals, no completions, and a backlog nothing drains.
    clients.stop();
    let quiet = window + Duration::from_secs(10);
    a.wait_for("arrivals", None, quiet, value_is(0.0)).await;
    a.wait_for("completions", None, quiet, value_is(0.0)).await;
    a.wait_for("drain", None, quiet, value_is(3600.0)).await;
    // The group finishes the backlog: nothing waits, the drain time is 0.
    while work_one(&mut c, &stream).await {}
    a.wait_for("drain", None, quiet, value_is(0.0)).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_queue_serves_rates_from_its_cumulative_counters() {
    set_guest_password_env();
    queue_metrics_adapter::tls::ensure_crypto_provider();
    // Statistics every 250 ms rather than every 5 s, so a window of a few seconds holds many.
    let node =
        RabbitNode::start_with(|_, _| ("collect_statistics_interval = 250\n".into(), false)).await;
    let config = format!(
        r#"poll_interval: 250ms
sources:
  rabbit:
    rabbitmq: {{management_url: "{}", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD}}
metrics:
  - {{name: arrivals, source: rabbit, measure: arrival_rate, window: 5s, rabbitmq: {{queue: jobs}}}}
  - {{name: completions, source: rabbit, measure: completion_rate, window: 5s, rabbitmq: {{queue: jobs}}}}
  - {{name: dramatiq-completions, source: rabbit, measure: completion_rate, window: 5s, rabbitmq: {{library: dramatiq, queue: jobs}}}}
"#,
        node.management_url()
    );
    let mut clients = PacedRabbit::declare(&node.amqp_url()).await;
    let a = Adapter::start(&config).await;
    clients.start().await;
    let (published, acked) = (clients.published.clone(), clients.acked.clone());
    let window = Duration::from_secs(5);
    let limit = Duration::from_secs(30);
    tokio::time::sleep(window + Duration::from_secs(1)).await;
    close_to(&a, "arrivals", limit, async || published.rate(window)).await;
    close_to(&a, "completions", limit, async || acked.rate(window)).await;
    // A library's queue has the queue's own counters.
    close_to(&a, "dramatiq-completions", limit, async || {
        acked.rate(window)
    })
    .await;
    clients.stop().await;
    let quiet = window + Duration::from_secs(10);
    a.wait_for("arrivals", None, quiet, value_is(0.0)).await;
    a.wait_for("completions", None, quiet, value_is(0.0)).await;
    a.stop().await;
}

/// BullMQ: `count` jobs added one every 50 ms, run by a worker (one at a time, 100 ms each)
/// that keeps metrics, so that BullMQ counts completions; then the worker closes. Prints the
/// version.
const BULLMQ_PACED: &str = r#"
const [pkg, url, prefix, count] = process.argv.slice(1);
const { Queue, Worker } = require(pkg);
const u = new URL(url);
const connection = { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1) || 0) };
(async () => {
  const q = new Queue('paced', { prefix, connection });
  const w = new Worker('paced', async () => { await new Promise((r) => setTimeout(r, 100)); },
    { prefix, connection, concurrency: 1, metrics: { maxDataPoints: 60 } });
  for (let n = 0; n < Number(count); n++) {
    await q.add('embed', { n });
    await new Promise((r) => setTimeout(r, 50));
  }
  while ((await q.getWaitingCount()) + (await q.getActiveCount()) > 0) await new Promise((r) => setTimeout(r, 50));
  await w.close();
  await q.close();
  console.log(JSON.stringify({ version: require(pkg + '/package.json').version }));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// BullMQ: one job added and run by a worker without metrics: no completion count is kept.
const BULLMQ_NO_METRICS: &str = r#"
const [pkg, url, prefix] = process.argv.slice(1);
const { Queue, Worker } = require(pkg);
const u = new URL(url);
const connection = { host: u.hostname, port: Number(u.port), db: Number(u.pathname.slice(1) || 0) };
(async () => {
  const q = new Queue('bare', { prefix, connection });
  await q.add('embed', {});
  const w = new Worker('bare', async () => {}, { prefix, connection });
  while ((await q.getCompletedCount()) < 1) await new Promise((r) => setTimeout(r, 50));
  await w.close();
  await q.close();
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bullmq_counts_arrivals_in_its_id_and_completions_where_workers_keep_metrics() {
    let url = redis_url();
    for pkg in ["bullmq", "bullmq5"] {
        let p = prefix(pkg);
        let _clean = Cleanup {
            url: url.clone(),
            prefix: p.clone(),
        };
        let bull = p.trim_end_matches(':').to_string();
        node(
            BULLMQ_NO_METRICS,
            &[pkg, &url, &bull],
            Duration::from_secs(60),
        )
        .await;
        let preset = |name: &str, measure: &str, queue: &str| {
            format!(
                "  - {{name: {name}, source: jobs, measure: {measure},{} redis: {{library: bullmq, queue: {queue}, prefix: \"{bull}\"}}}}\n",
                if measure == "length" {
                    ""
                } else {
                    " window: 3s,"
                }
            )
        };
        // The worker runs one job at a time: one ready replica (the Kubernetes API stub's).
        let stub = KubeStub::start().await;
        stub.apply("deployments", deployment("ml", "embed", 1));
        let config = format!(
            "poll_interval: 200ms\nkubernetes:\n  kubeconfig: {}\nsources:\n  jobs:\n    redis: {{url: \"{url}\", wake: {{enabled: false}}, max_drain_seconds: 3600}}\nmetrics:\n{}{}{}{}{}  - {{name: needed, source: jobs, measure: workers_needed, window: 3s, target_wait: 5s, workers: {{deployment: embed, namespace: ml}}, redis: {{library: bullmq, queue: paced, prefix: \"{bull}\"}}}}\n",
            stub.kubeconfig().display(),
            preset("arrivals", "arrival_rate", "paced"),
            preset("completions", "completion_rate", "paced"),
            preset("drain", "drain_seconds", "paced"),
            preset("waiting", "length", "paced"),
            preset("bare-completions", "completion_rate", "bare"),
        );
        let a = Adapter::start(&config).await;
        let script = {
            let (pkg, url, bull) = (pkg.to_string(), url.clone(), bull.clone());
            tokio::spawn(async move {
                node(
                    BULLMQ_PACED,
                    &[&pkg, &url, &bull, "160"],
                    Duration::from_secs(90),
                )
                .await
            })
        };
        // The truth from BullMQ's own records: each job's `timestamp` (added) and the
        // `completed` set's scores (finishedOn), over the window to the server's now.
        let window_ms = 3000.0;
        let truth = async |what: &str| -> f64 {
            let mut c = connect(&url).await;
            let now = server_now_ms(&mut c).await as f64;
            let from = now - window_ms;
            let n = match what {
                "added" => {
                    let last: Option<i64> =
                        cmd(&mut c, &["GET", &format!("{bull}:paced:id")]).await;
                    let mut n = 0;
                    for id in 1..=last.unwrap_or(0) {
                        let ts: Option<f64> = cmd(
                            &mut c,
                            &["HGET", &format!("{bull}:paced:{id}"), "timestamp"],
                        )
                        .await;
                        n += usize::from(ts.is_some_and(|t| t > from && t <= now));
                    }
                    n as f64
                }
                _ => {
                    cmd::<i64>(
                        &mut c,
                        &[
                            "ZCOUNT",
                            &format!("{bull}:paced:completed"),
                            &format!("({from}"),
                            &now.to_string(),
                        ],
                    )
                    .await as f64
                }
            };
            n / (window_ms / 1000.0)
        };
        let limit = Duration::from_secs(20);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        close_to(&a, "arrivals", limit, async || truth("added").await).await;
        let done = close_to(&a, "completions", limit, async || truth("completed").await).await;
        let start = Instant::now();
        loop {
            let waiting = served(&a, "waiting").await;
            let drain = served(&a, "drain").await;
            if let (Ok(w), Ok(d)) = (&waiting, &drain)
                && (d - w / done).abs() <= TOLERANCE * (w / done)
            {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "{pkg}: drain {drain:?}, waiting {waiting:?} over {done}/s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // workers_needed from the same readings: ⌈(arrivals + waiting / 5 s) / completions⌉ for
        // the one replica.
        let start = Instant::now();
        loop {
            let parts = (
                served(&a, "arrivals").await,
                served(&a, "waiting").await,
                served(&a, "completions").await,
            );
            let needed = served(&a, "needed").await;
            if let ((Ok(l), Ok(w), Ok(mu)), Ok(n)) = (&parts, &needed)
                && (n - ((l + w / 5.0) / mu).ceil()).abs() <= 1.0
            {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "{pkg}: needed {needed:?} from arrivals, waiting, completions {parts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        check_error(&a, "bare-completions", "does not exist", limit).await;
        let out = script.await.expect("script");
        assert!(out.contains("version"), "{out}");
        // All done: nothing arrives, nothing waits.
        a.wait_for("arrivals", None, Duration::from_secs(10), value_is(0.0))
            .await;
        a.wait_for("drain", None, Duration::from_secs(10), value_is(0.0))
            .await;
        a.stop().await;
    }
}

/// Sidekiq: `count` jobs pushed at once to `embed`; each run records its end time (the
/// server's clock, ms) in `qma:done` and takes 100 ms.
const SIDEKIQ_PUSH: &str = r#"
require "sidekiq"
Sidekiq.configure_client { |config| config.redis = { url: ARGV[0] } }
Sidekiq::Client.push_bulk("queue" => "embed", "class" => "PacedJob", "args" => (0...ARGV[1].to_i).map { |n| [n] })
puts Sidekiq::VERSION
"#;

const SIDEKIQ_PACED_WORKER: &str = r#"
require "sidekiq"
class PacedJob
  include Sidekiq::Worker
  def perform(n)
    sleep 0.1
    Sidekiq.redis { |conn| t = conn.time; conn.rpush("qma:done", t[0] * 1000 + t[1] / 1000) }
  end
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidekiq_completions_are_counted_for_all_queues_at_its_heartbeats() {
    // Sidekiq's keys take no prefix: a private server.
    let server = RedisProcess::start().await;
    let url = server.url();
    let dir = std::env::temp_dir().join(format!("qma-sidekiq-rates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("worker.rb");
    std::fs::write(&file, SIDEKIQ_PACED_WORKER).expect("worker file");
    // Sidekiq adds to stat:processed at each heartbeat (every 5 s in 6.x, 10 s from 7.0): a
    // window of 30 s holds several.
    let config = format!(
        r#"poll_interval: 500ms
sources:
  jobs:
    redis: {{url: "{url}", wake: {{enabled: false}}}}
metrics:
  - {{name: completions, source: jobs, measure: completion_rate, window: 30s, redis: {{library: sidekiq, queue: embed}}}}
  - {{name: arrivals, source: jobs, measure: arrival_rate, redis: {{library: sidekiq, queue: embed}}}}
  - {{name: drain, source: jobs, measure: drain_seconds, redis: {{library: sidekiq, queue: embed}}}}
"#
    );
    let a = Adapter::start(&config).await;
    let limit = Duration::from_secs(10);
    // Nothing has counted yet: the counter does not exist, which is no rate of 0.
    check_error(&a, "completions", "does not exist", limit).await;
    check_error(&a, "arrivals", "counts no enqueues", limit).await;
    check_error(&a, "drain", "for all its queues together", limit).await;
    ruby(SIDEKIQ_PUSH, &[&url, "500"], Duration::from_secs(60)).await;
    let worker = sidekiq_worker(&file, "embed", &url);
    let window_ms = 30_000.0;
    let truth = async || {
        let mut c = connect(&url).await;
        let now = server_now_ms(&mut c).await as f64;
        let done: Vec<f64> = cmd(&mut c, &["LRANGE", "qma:done", "0", "-1"]).await;
        let n = done.iter().filter(|t| **t > now - window_ms).count();
        n as f64 / (window_ms / 1000.0)
    };
    // A full window of runs first.
    tokio::time::sleep(Duration::from_secs(33)).await;
    close_to(&a, "completions", Duration::from_secs(20), truth).await;
    let (_, body) = a.metric("completions", None).await;
    assert_eq!(
        body["items"][0]["metricLabels"]["scope"], "all-queues",
        "{body}"
    );
    drop(worker);
    a.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
