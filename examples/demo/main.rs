//! `make demo`: the adapter driving scale-up and scale to zero on real queues, in about 20 seconds.
//!
//! It starts the adapter in this process on the local Redis and RabbitMQ, produces a burst of
//! embedding jobs (a Sidekiq-style Redis list with `enqueued_at` timestamps, and a RabbitMQ
//! queue), and simulates a worker Deployment whose replicas each consume a fixed rate from both.
//! Every few seconds it reads the adapter's own external metrics API, as the HPA would, and
//! applies the HPA's replica formula (tolerance 0.1, `AverageValue` for depth, `Value` for age,
//! scale-down stabilization) plus KEDA's activation (scale to zero when nothing waits, wake when
//! something does). It prints progress live, ends with the queues drained and zero replicas,
//! writes an SVG chart and a summary, and removes its keys and vhost.
//!
//! Times are compressed (the HPA syncs every 2 s instead of 15 s, windows are seconds instead
//! of minutes) so the whole run fits in about 20 seconds; the formulas are the real ones.
//!
//! A second act ([`second_act`]) then scales one burst three ways (jobs per replica, oldest
//! age, `workers_needed`) and compares them in a table and `target/demo/strategies.svg`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use plotters::prelude::*;
use queue_metrics_adapter::app::{self, Settings};
use queue_metrics_adapter::config::Config;

mod second_act;

const REDIS: &str = "redis://127.0.0.1:6379/0";
const MANAGEMENT: &str = "http://127.0.0.1:15672";

/// The burst: jobs per queue, produced over `BURST_SECONDS`.
const REDIS_JOBS: u64 = 2400;
const RABBIT_JOBS: u64 = 1200;
const BURST_SECONDS: f64 = 6.0;
/// What one replica consumes per second from each queue.
const REDIS_RATE: f64 = 30.0;
const RABBIT_RATE: f64 = 15.0;

/// The scaling policy, as an HPA + KEDA ScaledObject would say it.
const SYNC: Duration = Duration::from_secs(2);
const MAX_REPLICAS: u32 = 20;
const TOLERANCE: f64 = 0.1;
const DEPTH_PER_REPLICA: f64 = 100.0; // AverageValue target for both queues' depth
const AGE_TARGET_S: f64 = 15.0; // Value target for the oldest job's age
const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(10);
const COOLDOWN: Duration = Duration::from_secs(8); // KEDA: idle this long -> 0 replicas
const DEADLINE: Duration = Duration::from_secs(115);

/// One HPA sync as recorded for the chart and the summary.
struct Point {
    t: f64,
    redis: f64,
    rabbit: f64,
    age: f64,
    replicas: u32,
}

/// The HPA's proposal for one metric (`k8s.io/kubernetes pkg/controller/podautoscaler`).
fn proposal(usage: f64, target: f64, average: bool, current: u32) -> u32 {
    let current_f = f64::from(current.max(1));
    let ratio = if average {
        usage / (target * current_f)
    } else {
        usage / target
    };
    if (ratio - 1.0).abs() <= TOLERANCE {
        return current;
    }
    let desired = if average {
        (usage / target).ceil()
    } else {
        (ratio * current_f).ceil()
    };
    desired.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The HPA's scale-down stabilization: `desired` joins the recommendations of the last
/// `window`; a scale-up is taken at once, a scale-down only to the highest recommendation of
/// the window.
fn stabilize(
    recommendations: &mut VecDeque<(Instant, u32)>,
    now: Instant,
    desired: u32,
    current: u32,
    window: Duration,
) -> u32 {
    recommendations.push_back((now, desired));
    while recommendations
        .front()
        .is_some_and(|(t, _)| now - *t > window)
    {
        recommendations.pop_front();
    }
    let highest = recommendations
        .iter()
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(desired);
    if desired >= current {
        desired
    } else {
        highest.min(current)
    }
}

/// The Deployment's scaler: HPA recommendations with a scale-down window, and KEDA's
/// activation and cooldown around them.
struct Scaler {
    replicas: u32,
    recommendations: VecDeque<(Instant, u32)>,
    last_active: Option<Instant>,
}

impl Scaler {
    fn sync(&mut self, now: Instant, values: Option<(f64, f64, f64)>) -> u32 {
        // A metric the adapter cannot read (503): hold, as the HPA does.
        let Some((redis, rabbit, age)) = values else {
            return self.replicas;
        };
        let active = redis > 0.0 || rabbit > 0.0;
        if active {
            self.last_active = Some(now);
        }
        if self.replicas == 0 {
            // KEDA wakes the Deployment to one replica; the HPA takes it from there.
            self.replicas = u32::from(active);
            return self.replicas;
        }
        if !active && self.last_active.is_none_or(|t| now - t >= COOLDOWN) {
            self.recommendations.clear();
            self.replicas = 0;
            return 0;
        }
        let desired = [
            proposal(redis, DEPTH_PER_REPLICA, true, self.replicas),
            proposal(rabbit, DEPTH_PER_REPLICA, true, self.replicas),
            proposal(age, AGE_TARGET_S, false, self.replicas),
        ]
        .into_iter()
        .max()
        .unwrap_or(1)
        .clamp(1, MAX_REPLICAS);
        self.replicas = stabilize(
            &mut self.recommendations,
            now,
            desired,
            self.replicas,
            SCALE_DOWN_WINDOW,
        );
        self.replicas
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn encode(s: &str) -> String {
    s.replace('/', "%2F")
}

/// The demo's own queues: a key prefix and a vhost, removed at the end.
struct Queues {
    prefix: String,
    vhost: String,
    http: reqwest::Client,
    redis: redis::aio::MultiplexedConnection,
}

impl Queues {
    async fn create() -> anyhow::Result<Queues> {
        let pid = std::process::id();
        let vhost = format!("qma-demo-{pid}");
        let http = reqwest::Client::new();
        for (url, body) in [
            (format!("{MANAGEMENT}/api/vhosts/{}", encode(&vhost)), None),
            (
                format!("{MANAGEMENT}/api/permissions/{}/guest", encode(&vhost)),
                Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
            ),
        ] {
            let mut req = http.put(&url).basic_auth("guest", Some("guest"));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = req.send().await.context(
                "RabbitMQ management API unreachable (make demo starts RabbitMQ; run it that way)",
            )?;
            if !r.status().is_success() {
                bail!("RabbitMQ management API answered {} for {url}", r.status());
            }
        }
        let redis = redis::Client::open(REDIS)?
            .get_multiplexed_async_connection()
            .await
            .context("Redis on 127.0.0.1:6379 unreachable (make demo starts it)")?;
        Ok(Queues {
            prefix: format!("qma-demo:{pid}:"),
            vhost,
            http,
            redis,
        })
    }

    fn list(&self) -> String {
        format!("{}queue:embeddings", self.prefix)
    }

    async fn amqp(&self) -> anyhow::Result<Connection> {
        let uri = format!("amqp://guest:guest@127.0.0.1:5672/{}", encode(&self.vhost));
        Ok(Connection::connect(&uri, ConnectionProperties::default()).await?)
    }

    async fn cleanup(&mut self) {
        let _: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(self.list())
            .query_async(&mut self.redis)
            .await;
        let _ = self
            .http
            .delete(format!("{MANAGEMENT}/api/vhosts/{}", encode(&self.vhost)))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
    }
}

fn config(q: &Queues) -> String {
    format!(
        r#"
poll_interval: 500ms
sources:
  jobs:
    redis: {{url: "{REDIS}"}}
  rabbit:
    rabbitmq:
      management_url: {MANAGEMENT}
      username: guest
      # The local broker's guest account (as in examples/local.yaml).
      password_file: examples/secrets/rabbitmq-password
metrics:
  - name: embedding_queue_length
    source: jobs
    measure: length
    redis: {{type: list, key: "{list}"}}
  - name: embedding_queue_oldest_age_seconds
    source: jobs
    measure: oldest_age_seconds
    redis:
      type: list
      key: "{list}"
      timestamp: {{json_pointer: /enqueued_at, unit: ms}}
  - name: rabbit_embeddings_ready
    source: rabbit
    measure: ready
    rabbitmq: {{vhost: "{vhost}", queue: embeddings}}
"#,
        list = q.list(),
        vhost = q.vhost
    )
}

/// One metric value from the adapter's external metrics API, as the HPA reads it.
async fn read(http: &reqwest::Client, base: &str, metric: &str) -> Option<f64> {
    let url = format!("{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{metric}");
    let body: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
    let items = body["items"].as_array()?;
    let mut sum = 0.0;
    for item in items {
        let q = item["value"].as_str()?;
        sum += match q.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
            None => q.parse::<f64>().ok()?,
        };
    }
    (!items.is_empty()).then_some(sum)
}

/// One line of a panel: legend, colour, points.
type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// A panel: title, top of the data, its lines, and a target line (legend, value).
type Panel<'a> = (&'a str, f64, Vec<Line<'a>>, (String, f64));

/// The replica count as the HPA holds it: flat until the next sync, then a step.
fn steps(points: &[Point]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            out.push((p.t, f64::from(points[i - 1].replicas)));
        }
        out.push((p.t, f64::from(p.replicas)));
    }
    out
}

/// Three panels (depth, age, replicas) with their targets; the syncs at `held` (a metric was
/// unavailable, so the HPA held) are shaded grey.
fn chart(points: &[Point], held: &[f64], path: &Path) -> anyhow::Result<()> {
    let end = points
        .last()
        .map_or(1.0, |p| p.t)
        .max(held.last().copied().unwrap_or(0.0))
        .max(1.0);
    let root = SVGBackend::new(path, (960, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 1));
    let max_depth = points
        .iter()
        .map(|p| p.redis.max(p.rabbit))
        .fold(DEPTH_PER_REPLICA, f64::max);
    let max_age = points.iter().map(|p| p.age).fold(AGE_TARGET_S, f64::max);
    let series: [Panel; 3] = [
        (
            "queue depth (jobs)",
            max_depth,
            vec![
                (
                    "Redis list",
                    BLUE,
                    points.iter().map(|p| (p.t, p.redis)).collect(),
                ),
                (
                    "RabbitMQ ready",
                    RED,
                    points.iter().map(|p| (p.t, p.rabbit)).collect(),
                ),
            ],
            (
                format!("target: {DEPTH_PER_REPLICA:.0} jobs per replica"),
                DEPTH_PER_REPLICA,
            ),
        ),
        (
            "oldest job age (s)",
            max_age,
            vec![(
                "Redis oldest age",
                MAGENTA,
                points.iter().map(|p| (p.t, p.age)).collect(),
            )],
            (format!("target: {AGE_TARGET_S:.0} s"), AGE_TARGET_S),
        ),
        (
            "replicas",
            f64::from(MAX_REPLICAS),
            vec![("desired replicas", GREEN, steps(points))],
            (
                format!("maxReplicas: {MAX_REPLICAS}"),
                f64::from(MAX_REPLICAS),
            ),
        ),
    ];
    let grey = RGBColor(200, 200, 200);
    let half_sync = SYNC.as_secs_f64() / 2.0;
    for (panel, (title, top, lines, (target_name, target))) in panels.iter().zip(series) {
        // Head room above the data, so the legend covers no line.
        let y_top = top * 1.6;
        let mut c = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..end, 0.0..y_top)?;
        c.configure_mesh()
            .x_desc("seconds")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        if !held.is_empty() {
            c.draw_series(held.iter().map(|&t| {
                Rectangle::new(
                    [((t - half_sync).max(0.0), 0.0), (t + half_sync, y_top)],
                    grey.mix(0.5).filled(),
                )
            }))?
            .label("a metric unavailable: the HPA holds")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], grey.filled()));
        }
        c.draw_series(DashedLineSeries::new(
            vec![(0.0, target), (end, target)],
            6,
            4,
            BLACK.mix(0.6).stroke_width(1),
        ))?
        .label(target_name)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.6)));
        for (name, color, data) in lines {
            c.draw_series(LineSeries::new(data, color.stroke_width(2)))?
                .label(name)
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    let mut queues = Queues::create().await?;
    let outcome = run(&mut queues).await;
    queues.cleanup().await;
    println!(
        "cleaned up: Redis key {} and RabbitMQ vhost {}",
        queues.list(),
        queues.vhost
    );
    outcome
}

async fn run(q: &mut Queues) -> anyhow::Result<()> {
    let config = Config::from_yaml(&config(q), Path::new("demo.yaml"))?;
    let running = app::start(config, Settings::local()).await?;
    let base = format!("http://{}", running.api_addr);
    println!("adapter serving on {base} (plain HTTP, local demo)");
    println!(
        "burst: {REDIS_JOBS} jobs to Redis list {} and {RABBIT_JOBS} to RabbitMQ queue embeddings (vhost {}) over {BURST_SECONDS} s",
        q.list(),
        q.vhost
    );
    println!(
        "workers: {REDIS_RATE}/s (Redis) + {RABBIT_RATE}/s (RabbitMQ) per replica; HPA: {DEPTH_PER_REPLICA} jobs per replica (AverageValue), oldest age {AGE_TARGET_S} s (Value), tolerance {TOLERANCE}, scale-down window {}s; KEDA: wake on any job, zero after {}s idle\n",
        SCALE_DOWN_WINDOW.as_secs(),
        COOLDOWN.as_secs()
    );

    let amqp = q.amqp().await?;
    let ch = amqp.create_channel().await?;
    ch.queue_declare(
        "embeddings".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let http = reqwest::Client::new();
    let mut scaler = Scaler {
        replicas: 0,
        recommendations: VecDeque::new(),
        last_active: None,
    };
    let start = Instant::now();
    let mut produced = (0u64, 0u64);
    let mut credit = (0.0f64, 0.0f64);
    let mut points: Vec<Point> = Vec::new();
    let mut held: Vec<f64> = Vec::new();
    let mut next_sync = start;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut drained_at: Option<f64> = None;
    let list = q.list();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let t = (now - start).as_secs_f64();
        if now - start > DEADLINE {
            bail!("the demo did not reach zero replicas within {DEADLINE:?}");
        }
        // Producers: the burst.
        let due = |total: u64| ((t / BURST_SECONDS).min(1.0) * total as f64) as u64;
        let redis_due = due(REDIS_JOBS);
        if redis_due > produced.0 {
            let mut cmd = redis::cmd("LPUSH");
            cmd.arg(&list);
            for i in produced.0..redis_due {
                cmd.arg(format!(
                    r#"{{"class":"EmbedJob","jid":"{i}","enqueued_at":{}}}"#,
                    now_ms()
                ));
            }
            let _: i64 = cmd.query_async(&mut q.redis).await?;
            produced.0 = redis_due;
        }
        let rabbit_due = due(RABBIT_JOBS);
        for _ in produced.1..rabbit_due {
            ch.basic_publish(
                "".into(),
                "embeddings".into(),
                BasicPublishOptions::default(),
                b"{\"text\":\"...\"}",
                BasicProperties::default().with_timestamp(now_ms() / 1000),
            )
            .await?;
        }
        produced.1 = produced.1.max(rabbit_due);

        // Workers: each replica takes its rate, oldest first.
        let replicas = f64::from(scaler.replicas);
        credit.0 += replicas * REDIS_RATE * 0.1;
        credit.1 += replicas * RABBIT_RATE * 0.1;
        let take = credit.0.floor() as usize;
        if take > 0 {
            credit.0 -= take as f64;
            let _: Option<Vec<String>> = redis::cmd("RPOP")
                .arg(&list)
                .arg(take)
                .query_async(&mut q.redis)
                .await?;
        }
        let take = credit.1.floor() as usize;
        credit.1 -= take as f64;
        for _ in 0..take {
            let got = ch
                .basic_get("embeddings".into(), BasicGetOptions { no_ack: true })
                .await?;
            if got.is_none() {
                break;
            }
        }
        if scaler.replicas == 0 {
            credit = (0.0, 0.0);
        }

        // The HPA/KEDA sync, from the adapter's answers.
        if now < next_sync {
            continue;
        }
        next_sync += SYNC;
        let redis_depth = read(&http, &base, "embedding_queue_length").await;
        let age = read(&http, &base, "embedding_queue_oldest_age_seconds").await;
        let rabbit_depth = read(&http, &base, "rabbit_embeddings_ready").await;
        let values = match (redis_depth, rabbit_depth, age) {
            (Some(r), Some(b), Some(a)) => Some((r, b, a)),
            _ => None,
        };
        let before = scaler.replicas;
        let after = scaler.sync(now, values);
        let (r, b, a) = values.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        println!(
            "t={t:5.1}s  redis={r:6.0}  rabbit={b:6.0}  oldest={a:5.1}s  replicas {before:2} -> {after:2}{}",
            if values.is_none() {
                "  (a metric is unavailable: holding)"
            } else {
                ""
            }
        );
        if values.is_none() {
            held.push(t);
        }
        if values.is_some() {
            points.push(Point {
                t,
                redis: r,
                rabbit: b,
                age: a,
                replicas: after,
            });
        }
        let all_produced = produced == (REDIS_JOBS, RABBIT_JOBS);
        if all_produced && r == 0.0 && b == 0.0 && drained_at.is_none() {
            drained_at = Some(t);
        }
        if all_produced && drained_at.is_some() && after == 0 {
            break;
        }
    }
    running.shutdown().await;

    let dir = PathBuf::from("target/demo");
    std::fs::create_dir_all(&dir)?;
    let svg = dir.join("autoscaling.svg");
    chart(&points, &held, &svg)?;
    let peak = points.iter().map(|p| p.replicas).max().unwrap_or(0);
    let max_age = points.iter().map(|p| p.age).fold(0.0, f64::max);
    let total = points.last().map_or(0.0, |p| p.t);
    println!("\n=== summary ===");
    println!(
        "jobs:            {REDIS_JOBS} Redis + {RABBIT_JOBS} RabbitMQ, produced in {BURST_SECONDS} s"
    );
    println!("peak replicas:   {peak} (max {MAX_REPLICAS})");
    println!("oldest job wait: {max_age:.1} s (target {AGE_TARGET_S} s)");
    println!(
        "queues drained:  at {:.1} s (as the adapter reported)",
        drained_at.unwrap_or(total)
    );
    println!("zero replicas:   at {total:.1} s");
    println!("HPA syncs:       {}", points.len());
    println!("chart:           {}", svg.display());
    second_act::run(&mut q.redis, &dir).await
}
