//! The demo's second act: one burst scaled three ways, side by side.
//!
//! Three Redis streams get the same burst; each is worked by its own simulated Deployment whose
//! ready replicas each finish `SERVICE_RATE` jobs a second (read and acknowledged through a
//! consumer group, so the stream's counters move as a real worker's would). A new replica is
//! ready `STARTUP` after it is asked for and does nothing before. Each Deployment is scaled by
//! the HPA's own algorithm on one signal the adapter serves:
//! - **depth**: the group's `lag`, `AverageValue` `DEPTH_PER_REPLICA` jobs per replica;
//! - **age**: `oldest_unprocessed_age_seconds`, `Value` `AGE_TARGET_S`;
//! - **workers**: `workers_needed` with `target_wait` `AGE_TARGET_S`, `AverageValue` 1 (the
//!   adapter reads the Deployment's ready replicas from a local Kubernetes API stub that
//!   serves the simulated Deployments, the only stand-in here).
//!
//! The HPA's tolerance is its own (10 %); its sync period (15 s) and scale-down stabilization
//! (300 s) are shortened to 1 s and 10 s to fit the act in well under a minute; scale-up is not
//! stabilized (the default). The act prints a table and writes `target/demo/strategies.svg`.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use plotters::prelude::*;
use queue_metrics_adapter::app::{self, Settings};
use queue_metrics_adapter::config::Config;

use super::{REDIS, proposal, read, stabilize};

/// The burst, the same for each strategy: jobs produced over `BURST_SECONDS`.
const JOBS: u64 = 1200;
const BURST_SECONDS: f64 = 4.0;
/// Jobs a second one ready replica finishes.
const SERVICE_RATE: f64 = 20.0;
/// From asking for a replica to its being ready.
const STARTUP: Duration = Duration::from_secs(2);
const SYNC: Duration = Duration::from_secs(1);
const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(10);
const MIN_REPLICAS: u32 = 1;
const MAX_REPLICAS: u32 = 30;
const DEPTH_PER_REPLICA: f64 = 100.0;
const AGE_TARGET_S: f64 = 10.0;
const DEADLINE: Duration = Duration::from_secs(60);

/// The three ways: name, the metric it follows, its target, whether `AverageValue`.
const STRATEGIES: [(&str, &str, f64, bool); 3] = [
    ("depth", "act2_depth", DEPTH_PER_REPLICA, true),
    ("age", "act2_age", AGE_TARGET_S, false),
    ("workers", "act2_workers", 1.0, true),
];

/// A simulated Deployment: replicas asked for, and when each became (or becomes) ready.
struct Deployment {
    desired: u32,
    /// Ready times of the replicas that exist, oldest first.
    started: Vec<Instant>,
    recommendations: VecDeque<(Instant, u32)>,
}

impl Deployment {
    fn new(now: Instant) -> Self {
        Deployment {
            desired: MIN_REPLICAS,
            started: vec![now; MIN_REPLICAS as usize],
            recommendations: VecDeque::new(),
        }
    }

    fn ready(&self, now: Instant) -> u32 {
        self.started.iter().filter(|t| **t <= now).count() as u32
    }

    /// One HPA sync on `value` (`None`: unavailable, hold).
    fn sync(&mut self, now: Instant, value: Option<f64>, target: f64, average: bool) {
        let Some(v) = value else { return };
        let desired = proposal(v, target, average, self.desired).clamp(MIN_REPLICAS, MAX_REPLICAS);
        let next = stabilize(
            &mut self.recommendations,
            now,
            desired,
            self.desired,
            SCALE_DOWN_WINDOW,
        );
        let n = next as usize;
        if n > self.started.len() {
            self.started.resize(n, now + STARTUP);
        } else {
            // Pods not yet ready go first, as a ReplicaSet removes them.
            self.started.sort();
            self.started.truncate(n);
        }
        self.desired = next;
    }
}

/// The ready replicas the Kubernetes API stub serves, by Deployment name.
type Ready = Arc<Mutex<BTreeMap<String, u32>>>;

/// A local stand-in for the Kubernetes API: `GET .../deployments/{name}` with the simulated
/// Deployment's ready replicas; a kubeconfig pointing at it.
async fn kube_stub(ready: Ready, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    use axum::extract::{Path as UrlPath, State};
    use axum::routing::get;
    async fn deployment(
        State(ready): State<Ready>,
        UrlPath((ns, name)): UrlPath<(String, String)>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let Some(n) = ready.lock().expect("lock").get(&name).copied() else {
            return (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "not found"})),
            )
                .into_response();
        };
        axum::Json(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "status": {"replicas": n, "readyReplicas": n},
        }))
        .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            get(deployment),
        )
        .with_state(ready);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let path = dir.join("act2-kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: demo\n  cluster:\n    server: http://{addr}\nusers:\n- name: demo\n  user: {{}}\ncontexts:\n- name: demo\n  context:\n    cluster: demo\n    user: demo\ncurrent-context: demo\n"
        ),
    )?;
    Ok(path)
}

fn config(prefix: &str, kubeconfig: &Path) -> String {
    let mut out = format!(
        "poll_interval: 250ms\nkubernetes:\n  kubeconfig: {}\nsources:\n  act2:\n    redis: {{url: \"{REDIS}\", wake: {{enabled: false}}}}\nmetrics:\n",
        kubeconfig.display()
    );
    let stream = |name: &str| format!("{prefix}{name}");
    out.push_str(&format!(
        "  - {{name: act2_depth, source: act2, measure: lag, redis: {{type: stream, key: \"{}\", group: workers}}}}\n",
        stream("depth")
    ));
    out.push_str(&format!(
        "  - {{name: act2_age, source: act2, measure: oldest_unprocessed_age_seconds, redis: {{type: stream, key: \"{}\", group: workers}}}}\n",
        stream("age")
    ));
    out.push_str(&format!(
        "  - {{name: act2_workers, source: act2, measure: workers_needed, window: 4s, target_wait: {AGE_TARGET_S}s, workers: {{deployment: workers, namespace: demo}}, redis: {{type: stream, key: \"{}\", group: workers}}}}\n",
        stream("workers")
    ));
    out
}

/// What one strategy did, per sync.
#[derive(Default)]
struct Trace {
    t: Vec<f64>,
    backlog: Vec<f64>,
    replicas: Vec<u32>,
    drained_at: Option<f64>,
}

/// Runs the act; `dir` is where the chart goes.
pub async fn run(redis: &mut redis::aio::MultiplexedConnection, dir: &Path) -> anyhow::Result<()> {
    let prefix = format!("qma-demo-act2:{}:", std::process::id());
    let outcome = run_streams(redis, &prefix, dir).await;
    for (name, ..) in STRATEGIES {
        let _: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(format!("{prefix}{name}"))
            .query_async(redis)
            .await;
    }
    outcome
}

async fn run_streams(
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    for (name, ..) in STRATEGIES {
        let _: () = redis::cmd("XGROUP")
            .arg(&[
                "CREATE",
                &format!("{prefix}{name}"),
                "workers",
                "$",
                "MKSTREAM",
            ])
            .query_async(redis)
            .await
            .context("creating the act's streams")?;
    }
    let ready: Ready = Arc::new(Mutex::new(BTreeMap::new()));
    let kubeconfig = kube_stub(ready.clone(), dir).await?;
    let config = Config::from_yaml(&config(prefix, &kubeconfig), Path::new("act2.yaml"))?;
    let running = app::start(config, Settings::local()).await?;
    let base = format!("http://{}", running.api_addr);
    let http = reqwest::Client::new();
    println!(
        "\n=== second act: {JOBS} jobs in {BURST_SECONDS} s, scaled three ways ===\n\
         each ready replica finishes {SERVICE_RATE} jobs/s and is ready {}s after it is asked for; \
         HPA: tolerance 10 %, sync {}s, scale-down window {}s (shortened from 15 s and 300 s), min {MIN_REPLICAS}, max {MAX_REPLICAS}\n\
         depth: lag, {DEPTH_PER_REPLICA} jobs per replica | age: oldest unprocessed, {AGE_TARGET_S} s | workers: workers_needed, target_wait {AGE_TARGET_S} s, 1 per replica\n",
        STARTUP.as_secs(),
        SYNC.as_secs(),
        SCALE_DOWN_WINDOW.as_secs()
    );
    let start = Instant::now();
    let mut deployments: Vec<Deployment> =
        STRATEGIES.iter().map(|_| Deployment::new(start)).collect();
    let mut traces: Vec<Trace> = STRATEGIES.iter().map(|_| Trace::default()).collect();
    let mut credit = [0.0f64; 3];
    let mut produced = 0u64;
    let mut next_sync = start + SYNC;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let t = (now - start).as_secs_f64();
        if now - start > DEADLINE {
            bail!("the second act did not settle within {DEADLINE:?}");
        }
        {
            let mut r = ready.lock().expect("lock");
            r.insert("workers".into(), deployments[2].ready(now));
        }
        // The burst, into every stream alike.
        let due = ((t / BURST_SECONDS).min(1.0) * JOBS as f64) as u64;
        if due > produced {
            let mut pipe = redis::pipe();
            for (name, ..) in STRATEGIES {
                for _ in produced..due {
                    pipe.cmd("XADD")
                        .arg(format!("{prefix}{name}"))
                        .arg("*")
                        .arg("job")
                        .arg("embed")
                        .ignore();
                }
            }
            let _: () = pipe.query_async(redis).await?;
            produced = due;
        }
        // The workers: each ready replica finishes its share, read and acknowledged.
        for (i, (name, ..)) in STRATEGIES.iter().enumerate() {
            credit[i] += f64::from(deployments[i].ready(now)) * SERVICE_RATE * 0.05;
            let take = credit[i].floor() as usize;
            if take == 0 {
                continue;
            }
            credit[i] -= take as f64;
            let key = format!("{prefix}{name}");
            let read: redis::Value = redis::cmd("XREADGROUP")
                .arg(&["GROUP", "workers", "w"])
                .arg("COUNT")
                .arg(take)
                .arg("STREAMS")
                .arg(&key)
                .arg(">")
                .query_async(redis)
                .await?;
            let mut ids = Vec::new();
            entry_ids(&read, &mut ids);
            if ids.is_empty() {
                credit[i] = 0.0;
                continue;
            }
            let _: i64 = redis::cmd("XACK")
                .arg(&key)
                .arg("workers")
                .arg(&ids)
                .query_async(redis)
                .await?;
        }
        if now < next_sync {
            continue;
        }
        next_sync += SYNC;
        let mut line = format!("t={t:5.1}s");
        let mut settled = produced == JOBS;
        for (i, (name, metric, target, average)) in STRATEGIES.iter().enumerate() {
            let value = read(&http, &base, metric).await;
            deployments[i].sync(now, value, *target, *average);
            let lag: redis::Value = redis::cmd("XINFO")
                .arg(&["GROUPS", &format!("{prefix}{name}")])
                .query_async(redis)
                .await?;
            let waiting = group_waiting(&lag);
            let trace = &mut traces[i];
            trace.t.push(t);
            trace.backlog.push(waiting);
            trace.replicas.push(deployments[i].desired);
            if produced == JOBS && waiting == 0.0 && trace.drained_at.is_none() {
                trace.drained_at = Some(t);
            }
            settled &= trace.drained_at.is_some() && deployments[i].desired == MIN_REPLICAS;
            line.push_str(&format!(
                "  {name}: {:>6} waiting, {:>2} replicas ({})",
                waiting,
                deployments[i].desired,
                value.map_or("held".to_string(), |v| format!("{v:.1}"))
            ));
        }
        println!("{line}");
        if settled {
            break;
        }
    }
    running.shutdown().await;
    let svg = dir.join("strategies.svg");
    chart(&traces, &svg)?;
    println!(
        "\n| strategy | backlog gone at | peak replicas | replica-seconds | direction changes |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (i, (name, ..)) in STRATEGIES.iter().enumerate() {
        let tr = &traces[i];
        let peak = tr.replicas.iter().max().copied().unwrap_or(0);
        let replica_seconds: f64 = tr
            .replicas
            .iter()
            .map(|r| f64::from(*r) * SYNC.as_secs_f64())
            .sum();
        println!(
            "| {name} | {:.0} s | {peak} | {replica_seconds:.0} | {} |",
            tr.drained_at.unwrap_or(f64::NAN),
            direction_changes(&tr.replicas)
        );
    }
    println!("chart: {}", svg.display());
    Ok(())
}

/// The stream entry IDs (`<ms>-<seq>`) in an `XREADGROUP` reply.
fn entry_ids(v: &redis::Value, out: &mut Vec<String>) {
    match v {
        redis::Value::BulkString(b) => {
            let s = String::from_utf8_lossy(b);
            if let Some((ms, seq)) = s.split_once('-')
                && !ms.is_empty()
                && !seq.is_empty()
                && ms.bytes().all(|c| c.is_ascii_digit())
                && seq.bytes().all(|c| c.is_ascii_digit())
            {
                out.push(s.into_owned());
            }
        }
        redis::Value::Array(items) => items.iter().for_each(|i| entry_ids(i, out)),
        redis::Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            entry_ids(k, out);
            entry_ids(v, out);
        }),
        _ => {}
    }
}

/// `lag` + `pending` of the one group in an `XINFO GROUPS` reply.
fn group_waiting(v: &redis::Value) -> f64 {
    let redis::Value::Array(groups) = v else {
        return f64::NAN;
    };
    let Some(group) = groups.first() else {
        return f64::NAN;
    };
    let pairs: Vec<(String, i64)> = match group {
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| {
                Some((
                    redis::from_redis_value_ref::<String>(&kv[0]).ok()?,
                    redis::from_redis_value_ref::<i64>(kv.get(1)?).ok()?,
                ))
            })
            .collect(),
        redis::Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    redis::from_redis_value_ref::<String>(k).ok()?,
                    redis::from_redis_value_ref::<i64>(v).ok()?,
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v as f64)
    };
    match (get("lag"), get("pending")) {
        (Some(l), Some(p)) => l + p,
        _ => f64::NAN,
    }
}

/// How often the replica count turned from rising to falling or back.
fn direction_changes(replicas: &[u32]) -> usize {
    let mut last = 0i64;
    let mut changes = 0;
    for w in replicas.windows(2) {
        let step = i64::from(w[1]) - i64::from(w[0]);
        if step == 0 {
            continue;
        }
        let sign = step.signum();
        if last != 0 && sign != last {
            changes += 1;
        }
        last = sign;
    }
    changes
}

/// Two panels: the backlog and the replicas of each strategy.
fn chart(traces: &[Trace], path: &Path) -> anyhow::Result<()> {
    let end = traces
        .iter()
        .filter_map(|t| t.t.last().copied())
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 1));
    let colors = [BLUE, MAGENTA, GREEN];
    let top_backlog = traces
        .iter()
        .flat_map(|t| t.backlog.iter().copied())
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    for (p, (title, top)) in panels.iter().zip([
        ("jobs waiting", top_backlog),
        ("replicas", f64::from(MAX_REPLICAS)),
    ]) {
        let mut c = ChartBuilder::on(p)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..end, 0.0..top * 1.3)?;
        c.configure_mesh()
            .x_desc("seconds")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (i, (name, ..)) in STRATEGIES.iter().enumerate() {
            let tr = &traces[i];
            let data: Vec<(f64, f64)> = if title == "replicas" {
                tr.t.iter()
                    .zip(&tr.replicas)
                    .map(|(t, r)| (*t, f64::from(*r)))
                    .collect()
            } else {
                tr.t.iter()
                    .zip(&tr.backlog)
                    .map(|(t, b)| (*t, *b))
                    .collect()
            };
            let color = colors[i];
            c.draw_series(LineSeries::new(data, color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
