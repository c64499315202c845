//! KEDA at scale: the traffic of `QMA_BENCH_KEDA_OBJECTS` ScaledObjects (10,000 under `cargo
//! bench`) with an `external-push` trigger each, against the adapter's own binary at its default
//! flags, as a process of its own so that its CPU and memory are its alone.
//!
//! KEDA keeps one gRPC connection per scaler address, so everything goes over one HTTP/2
//! connection: a `StreamIsActive` stream per ScaledObject, held open for the whole run, and per
//! ScaledObject every 30 s (`QMA_BENCH_KEDA_PERIOD`) the calls KEDA's scale loop and the HPA's
//! metric reads make, `GetMetricSpec`, `GetMetrics` and `IsActive`, spread evenly over the
//! period. Each ScaledObject reads a metric of its own: the length of a Redis list (the Redis
//! at `QMA_REDIS_URL` or 127.0.0.1:6379, keys under a prefix of this run, deleted at the end),
//! all 10,000 polled by one source at the default 2 s interval, with `CLIENT TRACKING` wake.
//!
//! Reported: the time to open every stream, the adapter's RSS before the streams, with them
//! and at its peak (`/proc/<pid>/status`), its CPU over the loaded period (`/proc/<pid>/stat`),
//! each RPC's p50/p99/p99.9 as the client sees it, and the wake-up (a job pushed into one
//! ScaledObject's empty list → its stream says active) while the load runs, against the same
//! wake-up measured before the other streams were opened, in the same run.
//!
//! `cargo bench --bench keda_scale` (`make bench`); `cargo test` runs it once on 200 objects
//! for 3 s, checking behaviour only: every stream opens at the default flags and every call
//! and wake-up is answered. `QMA_BENCH_KEDA_OBJECTS`, `QMA_BENCH_KEDA_SECONDS` and
//! `QMA_BENCH_KEDA_PERIOD` (seconds) override the sizes.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use queue_metrics_adapter::api::keda::metadata;
use queue_metrics_adapter::api::keda::pb::external_scaler_client::ExternalScalerClient;
use queue_metrics_adapter::api::keda::pb::{GetMetricsRequest, ScaledObjectRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::transport::Channel;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn redis_url() -> String {
    std::env::var("QMA_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The adapter's process, stopped (and its keys deleted) on drop.
struct AdapterProcess {
    child: Child,
    dir: PathBuf,
}

impl AdapterProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (RSS, peak RSS) in KiB.
    fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        ticks / clock_ticks()
    }
}

impl Drop for AdapterProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The kernel's clock ticks per second (`/proc/<pid>/stat` counts CPU time in them).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}

async fn wait_ready(port: u16) {
    for _ in 0..300 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s
                .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await;
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply).await;
            if reply.starts_with(b"HTTP/1.0 200") || reply.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the adapter did not become ready");
}

fn object(i: usize) -> ScaledObjectRef {
    ScaledObjectRef {
        name: format!("so-{i}"),
        namespace: "default".into(),
        scaler_metadata: metadata(&[("metricName", &format!("q{i}")), ("targetValue", "10")]),
    }
}

/// p50, p99, p99.9 and the largest of `micros`, in ms.
fn percentiles(micros: &mut [u32]) -> [f64; 4] {
    micros.sort_unstable();
    let at = |q: f64| {
        if micros.is_empty() {
            return f64::NAN;
        }
        let i = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
        f64::from(micros[i]) / 1000.0
    };
    [at(0.5), at(0.99), at(0.999), at(1.0)]
}

/// A stream's message after its first one: (object, active, when).
type Event = (usize, bool, Instant);

/// Pushes a job into `key` and times until `events` says `object` is active; then empties
/// the list and waits until it says inactive again.
async fn wake_once(
    redis: &mut redis::aio::MultiplexedConnection,
    events: &mut mpsc::UnboundedReceiver<Event>,
    object: usize,
    key: &str,
) -> Duration {
    let pushed = Instant::now();
    let _: i64 = redis::cmd("LPUSH")
        .arg(key)
        .arg("job")
        .query_async(redis)
        .await
        .expect("LPUSH");
    let woke = loop {
        let (i, active, at) = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("a wake-up within 30 s")
            .expect("events");
        if i == object && active {
            break at;
        }
    };
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(redis)
        .await
        .expect("DEL");
    loop {
        let (i, active, _) = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("inactive again within 30 s")
            .expect("events");
        if i == object && !active {
            break;
        }
    }
    woke - pushed
}

/// Opens `object`'s stream on `client`, waits for its first message (inactive: every list is
/// empty) and reads the rest into `events`.
async fn open_stream(
    mut client: ExternalScalerClient<Channel>,
    i: usize,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), tonic::Status> {
    let mut stream = client.stream_is_active(object(i)).await?.into_inner();
    let first = stream.message().await?;
    assert_eq!(first.map(|m| m.result), Some(false), "object {i}");
    tokio::spawn(async move {
        while let Ok(Some(m)) = stream.message().await {
            let _ = events.send((i, m.result, Instant::now()));
        }
    });
    Ok(())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let objects = env_number("QMA_BENCH_KEDA_OBJECTS", if full { 10_000 } else { 200 }) as usize;
    let seconds = env_number("QMA_BENCH_KEDA_SECONDS", if full { 90 } else { 3 });
    let period = Duration::from_secs(env_number(
        "QMA_BENCH_KEDA_PERIOD",
        if full { 30 } else { 1 },
    ));
    let wakes = if full { 20 } else { 2 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(objects, seconds, period, wakes));
}

async fn run(objects: usize, seconds: u64, period: Duration, wakes: usize) {
    let prefix = format!("qma-bench-keda:{}:", std::process::id());
    let key = |i: usize| format!("{prefix}q:{i}");
    let dir = std::env::temp_dir().join(format!("qma-bench-keda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut config = format!(
        "sources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n",
        redis_url()
    );
    for i in 0..objects {
        config.push_str(&format!(
            "  - {{name: q{i}, source: jobs, measure: length, redis: {{type: list, key: \"{}\"}}}}\n",
            key(i)
        ));
    }
    std::fs::write(dir.join("config.yaml"), config).expect("config");
    let (http, grpc) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("adapter.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_queue-metrics-adapter"))
        .args(["serve", "--config"])
        .arg(dir.join("config.yaml"))
        .args(["--listen", &format!("127.0.0.1:{http}")])
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args([
            "--insecure-http",
            "--disable-auth",
            "--shutdown-delay",
            "0s",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the adapter's binary");
    let adapter = AdapterProcess { child, dir };
    let mut redis = redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    wait_ready(http).await;
    // One HTTP/2 connection, as KEDA keeps per scaler address.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
        .expect("uri")
        .connect()
        .await
        .expect("gRPC connect");
    let client = ExternalScalerClient::new(channel);
    tokio::time::sleep(Duration::from_secs(3)).await; // past start-up and a poll or two
    let (idle_rss, _) = adapter.memory();

    // The wake-up with one stream open and nothing else going on.
    let (tx, mut events) = mpsc::unbounded_channel();
    open_stream(client.clone(), 0, tx.clone())
        .await
        .expect("the first stream");
    // A second between wake-ups, under the load as here: the source's wake-ups are limited to
    // `wake.max_polls_per_second` (5), and each wake-up here is two changes (push, then delete).
    let pause = Duration::from_secs(1);
    let mut quiet = Vec::new();
    for _ in 0..wakes {
        tokio::time::sleep(pause).await;
        quiet.push(wake_once(&mut redis, &mut events, 0, &key(0)).await);
    }

    // Every other stream.
    let opening = Instant::now();
    let mut refused = 0usize;
    let mut open = vec![0usize];
    let mut pending = Vec::new();
    for i in 1..objects {
        pending.push((i, tokio::spawn(open_stream(client.clone(), i, tx.clone()))));
        if pending.len() == 512 || i + 1 == objects {
            for (i, p) in pending.drain(..) {
                match p.await.expect("task") {
                    Ok(()) => open.push(i),
                    Err(e) => {
                        refused += 1;
                        if refused == 1 {
                            eprintln!("[bench keda_scale] a stream was refused: {e}");
                        }
                    }
                }
            }
        }
    }
    let open_time = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (streams_rss, _) = adapter.memory();

    // The scale loop's calls, each object's once per period, spread evenly.
    let spec = Arc::new(Mutex::new(Vec::<u32>::new()));
    let metrics = Arc::new(Mutex::new(Vec::<u32>::new()));
    let active = Arc::new(Mutex::new(Vec::<u32>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let cpu_before = adapter.cpu_seconds();
    let mut callers = Vec::new();
    for i in 0..objects {
        let mut c = client.clone();
        let (spec, metrics, active, failures) = (
            spec.clone(),
            metrics.clone(),
            active.clone(),
            failures.clone(),
        );
        let offset = period.mul_f64(i as f64 / objects as f64);
        callers.push(tokio::spawn(async move {
            let mut next = start + offset;
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                let t = Instant::now();
                match c.get_metric_spec(object(i)).await {
                    Ok(_) => spec.lock().unwrap().push(t.elapsed().as_micros() as u32),
                    Err(e) => failures.lock().unwrap().push(format!("GetMetricSpec: {e}")),
                }
                let t = Instant::now();
                let request = GetMetricsRequest {
                    scaled_object_ref: Some(object(i)),
                    metric_name: format!("q{i}"),
                };
                match c.get_metrics(request).await {
                    Ok(_) => metrics.lock().unwrap().push(t.elapsed().as_micros() as u32),
                    Err(e) => failures.lock().unwrap().push(format!("GetMetrics: {e}")),
                }
                let t = Instant::now();
                match c.is_active(object(i)).await {
                    Ok(_) => active.lock().unwrap().push(t.elapsed().as_micros() as u32),
                    Err(e) => failures.lock().unwrap().push(format!("IsActive: {e}")),
                }
                next += period;
            }
        }));
    }
    // Wake-ups of other objects while the load runs, spread over it.
    let mut loaded = Vec::new();
    tokio::time::sleep(period.min(Duration::from_secs(seconds)) / 2).await;
    for w in 0..wakes {
        tokio::time::sleep(pause).await;
        let o = open[(1 + w * 7919) % open.len()];
        loaded.push(wake_once(&mut redis, &mut events, o, &key(o)).await);
    }
    for c in callers {
        c.await.expect("caller");
    }
    let busy = start.elapsed().as_secs_f64();
    let cpu = adapter.cpu_seconds() - cpu_before;
    let (rss, peak) = adapter.memory();
    drop(adapter);
    let keys: Vec<String> = (0..objects).map(key).collect();
    let _: i64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .expect("DEL");

    let failures = failures.lock().unwrap().clone();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let wake_line = |w: &mut Vec<Duration>| {
        w.sort();
        let mut micros: Vec<u32> = w.iter().map(|d| d.as_micros() as u32).collect();
        let [p50, _, _, max] = percentiles(&mut micros);
        format!("p50 {p50:.1} ms, max {max:.1} ms (n = {})", w.len())
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n### KEDA traffic of {objects} ScaledObjects on one HTTP/2 connection, {seconds} s, each object's GetMetricSpec + GetMetrics + IsActive every {} s\n",
        period.as_secs()
    );
    let _ = writeln!(
        out,
        "- streams: {} open at the default flags, {refused} refused; all opened in {:.0} ms",
        open.len(),
        ms(&open_time)
    );
    let _ = writeln!(
        out,
        "- adapter RSS: {:.1} MiB before the streams, {:.1} MiB with them ({:.1} KiB a stream), {:.1} MiB at the end, peak {:.1} MiB",
        mib(idle_rss),
        mib(streams_rss),
        (streams_rss.saturating_sub(idle_rss)) as f64 / objects as f64,
        mib(rss),
        mib(peak)
    );
    let calls = objects as f64 * 3.0 / period.as_secs_f64();
    let _ = writeln!(
        out,
        "- adapter CPU over the load: {:.0} millicores ({calls:.0} calls/s, polls of {objects} lists every 2 s)",
        cpu / busy * 1000.0
    );
    let _ = writeln!(
        out,
        "\n| RPC | calls | p50 | p99 | p99.9 | max |\n| --- | --- | --- | --- | --- | --- |"
    );
    for (name, v) in [
        ("GetMetricSpec", &spec),
        ("GetMetrics", &metrics),
        ("IsActive", &active),
    ] {
        let mut v = v.lock().unwrap().clone();
        let n = v.len();
        let [p50, p99, p999, max] = percentiles(&mut v);
        let _ = writeln!(
            out,
            "| {name} | {n} | {p50:.2} ms | {p99:.2} ms | {p999:.2} ms | {max:.2} ms |"
        );
    }
    let _ = writeln!(
        out,
        "\n- wake-up (push → StreamIsActive true): alone {}; under the load {}",
        wake_line(&mut quiet),
        wake_line(&mut loaded)
    );
    assert_eq!(refused, 0, "streams refused at the default flags");
    assert!(
        failures.is_empty(),
        "calls failed: {:?}",
        &failures[..failures.len().min(5)]
    );
}
