//! Wake-up latency from zero, and what waking costs under load, against the real Redis on
//! 127.0.0.1:6379 and the adapter in-process.
//!
//! Latency: an empty queue (the workload at zero, for 400 ms) gets one job; the time until the external
//! metrics API serves it and, for the list, until KEDA's `StreamIsActive` stream sends `true`.
//! Cases: an exact list key, a sorted set, a stream (`XADD`, length) and a key a pattern has
//! never seen; each at `poll_interval` 2 s (the default) and 30 s. Cost: a producer pushing 1,000
//! and then 10,000 jobs a second into a watched list for 5 s, with waking on and off: extra polls
//! per second, and Redis' own CPU time (`INFO cpu`) per second of load.
//!
//! `cargo bench --bench wake` runs 60 triggers per case (p50/p95 printed); `cargo test` runs it
//! once as a test with 3 triggers per case and a shorter load. Figures go in BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::{Adapter, Cleanup, connect, prefix, quantity, redis_url};
use queue_metrics_adapter::api::keda::pb::ScaledObjectRef;
use queue_metrics_adapter::api::keda::pb::external_scaler_client::ExternalScalerClient;
use redis::aio::MultiplexedConnection;

/// How long each queue stays at zero before the job that wakes it.
const IDLE: Duration = Duration::from_millis(400);

fn config(p: &str, interval: &str, wake: bool) -> String {
    format!(
        "poll_interval: {interval}\nsources:\n  jobs:\n    redis: {{url: \"{url}\", wake: {{enabled: {wake}}}}}\nmetrics:\n  - {{name: list, source: jobs, measure: length, redis: {{type: list, key: \"{p}list\"}}}}\n  - {{name: zset, source: jobs, measure: length, redis: {{type: zset, key: \"{p}zset\"}}}}\n  - {{name: stream, source: jobs, measure: length, redis: {{type: stream, key: \"{p}stream\"}}}}\n  - {{name: pattern, source: jobs, measure: length, redis: {{type: list, pattern: \"{p}q:*\"}}}}\n",
        url = redis_url()
    )
}

/// The value the external metrics API serves for `metric` (with `selector`), or `None`.
async fn served(a: &Adapter, metric: &str, selector: Option<&str>) -> Option<f64> {
    let (status, body) = a.metric(metric, selector).await;
    (status == 200)
        .then(|| body["items"][0]["value"].as_str().map(quantity))
        .flatten()
}

async fn run(c: &mut MultiplexedConnection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(c).await.expect("redis");
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{name}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms (n={})",
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.95).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        v.len()
    )
}

/// Waits until `metric` serves `want` (bounded), polling the API every half millisecond;
/// returns when it did.
async fn until_served(
    a: &Adapter,
    metric: &str,
    selector: Option<&str>,
    want: f64,
    limit: Duration,
) -> Instant {
    let start = Instant::now();
    loop {
        if served(a, metric, selector).await == Some(want) {
            return Instant::now();
        }
        assert!(
            start.elapsed() < limit,
            "{metric} {selector:?} never served {want}"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

async fn latencies(interval: &str, triggers: usize) -> Vec<String> {
    let p = prefix("bench-wake");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    run(
        &mut c,
        &[
            "XGROUP",
            "CREATE",
            &format!("{p}stream"),
            "workers",
            "$",
            "MKSTREAM",
        ],
    )
    .await;
    let a = Adapter::start(&config(&p, interval, true)).await;
    a.ready().await;
    let addr = a.running.as_ref().and_then(|r| r.grpc_addr).expect("grpc");
    let mut keda = ExternalScalerClient::connect(format!("http://{addr}"))
        .await
        .expect("grpc");
    let object = ScaledObjectRef {
        name: "embed".into(),
        namespace: "default".into(),
        scaler_metadata: [("metricName".to_string(), "list".to_string())].into(),
    };
    let mut stream = keda
        .stream_is_active(object)
        .await
        .expect("stream")
        .into_inner();
    let limit = Duration::from_secs(60);
    let mut out = Vec::new();
    let (mut api, mut active) = (Vec::new(), Vec::new());
    for i in 0..triggers {
        run(&mut c, &["DEL", &format!("{p}list")]).await;
        until_served(&a, "list", None, 0.0, limit).await;
        // The stream says false once the queue is at zero (it sends only changes).
        loop {
            let m = tokio::time::timeout(limit, stream.message())
                .await
                .expect("stream")
                .expect("ok")
                .expect("open");
            if !m.result {
                break;
            }
        }
        // The workload sits at zero a while (its wake budget refills), then a job comes.
        tokio::time::sleep(IDLE).await;
        let pushed = Instant::now();
        run(&mut c, &["LPUSH", &format!("{p}list"), &format!("job-{i}")]).await;
        let (seen, woke) = tokio::join!(until_served(&a, "list", None, 1.0, limit), async {
            let m = tokio::time::timeout(limit, stream.message())
                .await
                .expect("stream")
                .expect("ok")
                .expect("open");
            assert!(m.result);
            Instant::now()
        });
        api.push(seen - pushed);
        active.push(woke - pushed);
    }
    out.push(report(
        &format!("interval {interval}, list (exact key), external metrics API"),
        api,
    ));
    out.push(report(
        &format!("interval {interval}, list (exact key), KEDA StreamIsActive true"),
        active,
    ));
    for case in ["zset", "stream", "pattern"] {
        let mut seen = Vec::new();
        for i in 0..triggers {
            let (key, reset, push, selector): (String, Vec<String>, Vec<String>, Option<String>) =
                match case {
                    "zset" => {
                        let k = format!("{p}zset");
                        (
                            k.clone(),
                            vec!["DEL".into(), k.clone()],
                            vec!["ZADD".into(), k, "1".into(), format!("job-{i}")],
                            None,
                        )
                    }
                    "stream" => {
                        let k = format!("{p}stream");
                        (
                            k.clone(),
                            // Trimmed to nothing: length 0 again (and a change Redis reports;
                            // a consumer's XREADGROUP or XACK is not one, see README).
                            ["XTRIM", &k, "MAXLEN", "0"].map(String::from).to_vec(),
                            vec!["XADD".into(), k, "*".into(), "job".into(), i.to_string()],
                            None,
                        )
                    }
                    _ => {
                        let k = format!("{p}q:new-{i}");
                        (
                            k.clone(),
                            vec!["DEL".into(), k.clone()],
                            vec!["LPUSH".into(), k, "job".into()],
                            Some(format!("queue=new-{i}")),
                        )
                    }
                };
            let _ = key;
            let r: Vec<&str> = reset.iter().map(String::as_str).collect();
            run(&mut c, &r).await;
            if selector.is_none() {
                until_served(&a, case, None, 0.0, limit).await;
            }
            tokio::time::sleep(IDLE).await;
            let pushed = Instant::now();
            let args: Vec<&str> = push.iter().map(String::as_str).collect();
            run(&mut c, &args).await;
            seen.push(until_served(&a, case, selector.as_deref(), 1.0, limit).await - pushed);
        }
        let what = match case {
            "zset" => "sorted set",
            "stream" => "stream (XADD, length)",
            _ => "a pattern's new key",
        };
        out.push(report(
            &format!("interval {interval}, {what}, external metrics API"),
            seen,
        ));
    }
    a.stop().await;
    out
}

/// Redis CPU seconds used so far (user + system).
async fn redis_cpu(c: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(c)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "used_cpu_sys" | "used_cpu_user").then(|| v.trim().parse::<f64>().ok())?
        })
        .sum()
}

async fn load(rate: usize, seconds: u64, wake: bool) -> String {
    let p = prefix("bench-load");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let a = Adapter::start(&config(&p, "2s", wake)).await;
    a.ready().await;
    let wakes = || async {
        let (_, m) = a.get_text("/metrics").await;
        m.lines()
            .find_map(|l| {
                l.strip_prefix("qma_wake_polls_total{source=\"jobs\"} ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let mut c = connect(&redis_url()).await;
    let (w0, cpu0) = (wakes().await, redis_cpu(&mut c).await);
    let start = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = rate / 100;
    let mut sent = 0usize;
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut pipe = redis::pipe();
        for _ in 0..per_tick {
            pipe.cmd("LPUSH")
                .arg(format!("{p}list"))
                .arg("job")
                .ignore();
        }
        let () = pipe.query_async(&mut c).await.expect("push");
        sent += per_tick;
        let next = start + tick * (sent / per_tick) as u32;
        tokio::time::sleep_until(next.into()).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (w1, cpu1) = (wakes().await, redis_cpu(&mut c).await);
    a.stop().await;
    format!(
        "{rate} pushes/s for {secs:.1} s, waking {}: {:.1} extra polls/s, Redis CPU {:.1} % of a core",
        if wake { "on " } else { "off" },
        (w1 - w0) / secs,
        (cpu1 - cpu0) / secs * 100.0
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let triggers = if full { 60 } else { 3 };
        let intervals: &[&str] = if full { &["2s", "30s"] } else { &["30s"] };
        for interval in intervals {
            for line in latencies(interval, triggers).await {
                println!("{line}");
            }
        }
        let seconds = if full { 5 } else { 1 };
        for rate in [1_000, 10_000] {
            for wake in [false, true] {
                println!("{}", load(rate, seconds, wake).await);
            }
        }
    });
}
