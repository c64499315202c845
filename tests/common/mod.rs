//! Shared test harness: the adapter started in-process on an ephemeral port, unique Redis key
//! prefixes, and private `redis-server` processes for tests that must stop or audit a server.
//!
//! Tests talk to the real Redis on 127.0.0.1:6379 (`QMA_TEST_REDIS_URL` overrides it);
//! `make test` starts it. An unreachable Redis fails the test, it never skips.
//! `QMA_TEST_REDIS_PROTOCOL=resp3` makes every Redis URL here ask for RESP3 (`make test` runs
//! the Redis tests under both protocols).

#![allow(dead_code)]

pub mod gpu;
pub mod job_libraries;
pub mod kube_stub;
pub mod model_server;
pub mod nats;
pub mod paced;
pub mod pki;
pub mod postgres;
pub mod prometheus;
pub mod rabbit;
pub mod redis_topology;

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use queue_metrics_adapter::app::{self, Running, Settings};
use queue_metrics_adapter::config::Config;
use redis::aio::MultiplexedConnection;

/// The shared Redis every test may use, each under its own prefix.
pub fn redis_url() -> String {
    let url =
        std::env::var("QMA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    with_protocol(&url)
}

/// `url` with `protocol=resp3` added when `QMA_TEST_REDIS_PROTOCOL` says so.
pub fn with_protocol(url: &str) -> String {
    match std::env::var("QMA_TEST_REDIS_PROTOCOL").as_deref() {
        Ok("resp3" | "3") if !url.contains("protocol=") => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}protocol=resp3")
        }
        _ => url.to_string(),
    }
}

/// A prefix no other test (or run) uses: `qma-test:<name>:<pid>-<n>:`.
pub fn prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "qma-test:{name}:{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connection for setting up test data (tests may write; the adapter may not).
pub async fn connect(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).expect("valid test redis url");
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("redis connect timed out")
    .unwrap_or_else(|e| {
        panic!("cannot reach Redis at {url} ({e}); run `make test`, which starts it")
    })
}

/// Runs one command for test set-up.
pub async fn cmd<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The Redis server's clock in epoch milliseconds.
pub async fn server_now_ms(conn: &mut MultiplexedConnection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    secs * 1000 + micros / 1000
}

/// A reqwest client, with the process's TLS crypto provider in place (reqwest is built without one).
pub fn http_client() -> reqwest::Client {
    queue_metrics_adapter::tls::ensure_crypto_provider();
    reqwest::Client::new()
}

/// Runs `work` to completion on a thread with a runtime of its own: `Drop` may run inside a
/// runtime, where blocking on another future is not allowed.
pub fn on_own_runtime(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(work);
        }
    })
    .join();
}

/// Deletes every key under `prefix` when dropped, so tests leave nothing behind.
pub struct Cleanup {
    pub url: String,
    pub prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{}*", self.prefix);
        on_own_runtime(async move {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return;
            };
            let mut cursor = 0u64;
            loop {
                let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                else {
                    return;
                };
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> =
                        redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        });
    }
}

/// An adapter running in this process.
pub struct Adapter {
    pub running: Option<Running>,
    pub base: String,
    pub http: reqwest::Client,
}

impl Adapter {
    /// Starts the adapter on 127.0.0.1:0 with the YAML `config`.
    pub async fn start(config: &str) -> Adapter {
        Self::start_with(config, |_| {}).await
    }

    /// Like [`Adapter::start`], letting `adjust` change the settings first (TLS, ports).
    pub async fn start_with(config: &str, adjust: impl FnOnce(&mut Settings)) -> Adapter {
        if std::env::var_os("RUST_LOG").is_some() {
            queue_metrics_adapter::telemetry::init_logging(
                queue_metrics_adapter::telemetry::LogFormat::Text,
            );
        }
        let config = Config::from_yaml(config, std::path::Path::new("test.yaml"))
            .expect("test config is valid");
        let mut settings = Settings {
            grpc_listen: Some("127.0.0.1:0".parse().expect("addr")),
            ..Settings::local()
        };
        adjust(&mut settings);
        let running = app::start(config, settings).await.expect("adapter starts");
        let base = format!("http://{}", running.api_addr);
        Adapter {
            running: Some(running),
            base,
            http: http_client(),
        }
    }

    /// Waits until `n` more polls have been recorded (bounded: fails after 20 s).
    pub async fn polls(&self, n: usize) {
        let store = &self.running.as_ref().expect("running").store;
        let mut rx = store.subscribe();
        rx.borrow_and_update();
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(20), rx.changed())
                .await
                .expect("no poll recorded within 20 s")
                .expect("store alive");
        }
    }

    /// Waits until `/readyz` is 200: every source has finished a poll (bounded: 20 s).
    pub async fn ready(&self) {
        let start = std::time::Instant::now();
        while self.get_text("/readyz").await.0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "not ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET `path`, returning status and JSON body (a body that is not JSON comes back as a string).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get_text(path).await;
        let json = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(_) => serde_json::Value::String(body),
        };
        (status, json)
    }

    /// GET `path`, returning status and text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// GET a metric in namespace `default` with an optional selector.
    pub async fn metric(&self, name: &str, selector: Option<&str>) -> (u16, serde_json::Value) {
        let mut path = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{name}");
        if let Some(s) = selector {
            path.push_str("?labelSelector=");
            path.push_str(
                &s.replace('=', "%3D")
                    .replace(' ', "%20")
                    .replace(',', "%2C")
                    .replace('!', "%21"),
            );
        }
        self.get_json(&path).await
    }

    /// Reads `metric` (with `selector`) until `ok` holds, for up to `limit`, and returns that
    /// answer: for values that appear after a poll or a broker's statistics interval.
    pub async fn wait_for(
        &self,
        metric: &str,
        selector: Option<&str>,
        limit: Duration,
        ok: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> (u16, serde_json::Value) {
        let start = std::time::Instant::now();
        loop {
            let (status, body) = self.metric(metric, selector).await;
            if ok(status, &body) {
                return (status, body);
            }
            assert!(
                start.elapsed() < limit,
                "{metric} {selector:?}: still {status} {body} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the adapter.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// The value of a metric response's only item, parsed from its quantity string.
pub fn single_value(body: &serde_json::Value) -> f64 {
    let items = body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {body}"));
    assert_eq!(items.len(), 1, "expected one item in {body}");
    quantity(items[0]["value"].as_str().expect("value is a string"))
}

/// For [`Adapter::wait_for`]: a 200 with exactly one item whose value is `want`.
pub fn value_is(want: f64) -> impl Fn(u16, &serde_json::Value) -> bool {
    move |status, body| {
        status == 200
            && body["items"].as_array().is_some_and(|i| i.len() == 1)
            && quantity(body["items"][0]["value"].as_str().unwrap_or("x")) == want
    }
}

/// Parses the quantity strings we emit (`"12"`, `"1500m"`).
pub fn quantity(q: &str) -> f64 {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().expect("milli quantity") / 1000.0,
        None => q.parse().expect("plain quantity"),
    }
}

/// A private `redis-server` on a free port, for tests that stop it or audit its command stats.
pub struct RedisProcess {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    /// Extra server arguments (TLS, a password); with them, readiness is a TCP connect.
    extra: Vec<String>,
}

impl RedisProcess {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> RedisProcess {
        Self::start_with(|_| Vec::new()).await
    }

    /// Starts a server with extra arguments made from its scratch directory; `{port}` in them
    /// is the free port, and they must then name the port themselves.
    pub async fn start_with(extra: impl FnOnce(&std::path::Path) -> Vec<String>) -> RedisProcess {
        let port = StdListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("qma-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let extra = extra(&dir)
            .into_iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let mut p = RedisProcess {
            port,
            dir,
            child: None,
            extra,
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.extra.is_empty() {
            args.extend(["--port".to_string(), self.port.to_string()]);
        }
        args.extend(self.extra.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if !self.extra.is_empty() {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
                {
                    return;
                }
            } else if let Ok(client) = redis::Client::open(self.url().as_str())
                && let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server on port {} did not start", self.port);
    }

    pub fn url(&self) -> String {
        with_protocol(&format!("redis://127.0.0.1:{}/0", self.port))
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (empty: it keeps nothing).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
