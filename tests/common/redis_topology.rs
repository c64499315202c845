//! Private Redis topologies on loopback for the Sentinel and Cluster tests: every process on a
//! free port under its own scratch directory, killed and removed when dropped.

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// A free TCP port on 127.0.0.1 (and, for a cluster node, its bus port +10000 free too).
pub fn free_port() -> u16 {
    loop {
        let port = StdListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        if port < 55000 && StdListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// One `redis-server` (or sentinel) process.
pub struct Node {
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Stopped with SIGSTOP: the process holds its port and accepts connections (the kernel
    /// does) but answers nothing, as a hung node or a partition that drops packets.
    stopped: bool,
}

impl Node {
    /// Starts `redis-server` with `args` (the port and scratch directory are added) and waits
    /// until it answers `PING`.
    pub async fn start(role: &str, args: &[String]) -> Node {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("qma-{role}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let mut node = Node {
            port,
            dir,
            args: args.to_vec(),
            child: None,
            stopped: false,
        };
        node.spawn().await;
        node
    }

    /// Starts a sentinel monitoring `master_port` as `name` (quorum 2).
    pub async fn sentinel(name: &str, master_port: u16) -> Node {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("qma-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {name} 127.0.0.1 {master_port} 2\nsentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 4000\nsentinel parallel-syncs {name} 1\n",
                dir = dir.display()
            ),
        )
        .expect("sentinel.conf");
        let mut node = Node {
            port,
            dir,
            args: vec![conf.display().to_string(), "--sentinel".into()],
            child: None,
            stopped: false,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let sentinel = self.args.iter().any(|a| a == "--sentinel");
        let mut cmd = Command::new("redis-server");
        cmd.args(&self.args);
        if !sentinel {
            cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&self.dir);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(client) = redis::Client::open(self.url().as_str())
                && let Ok(Ok(mut c)) = tokio::time::timeout(
                    Duration::from_secs(1),
                    client.get_multiplexed_async_connection(),
                )
                .await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self) -> MultiplexedConnection {
        super::connect(&self.url()).await
    }

    /// SIGKILL: no goodbye to clients or replicas. Works on a stopped process too.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }

    /// SIGSTOP: the node hangs (connections are still accepted, nothing is answered).
    pub fn stop(&mut self) {
        self.signal("-STOP");
        self.stopped = true;
    }

    /// SIGCONT: a stopped node runs again, with whatever it believed when it stopped.
    pub fn cont(&mut self) {
        self.signal("-CONT");
        self.stopped = false;
    }

    fn signal(&self, which: &str) {
        let child = self.child.as_ref().expect("a running node");
        let status = Command::new("kill")
            .args([which, &child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {which} {}", child.id());
    }

    /// Whether it runs and answers (neither killed nor stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some() && !self.stopped
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `INFO commandstats` as command → calls.
pub async fn command_calls(conn: &mut MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// The commands whose call count changed from `before` to `after` (two [`command_calls`]).
pub fn ran_between(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<String> {
    after
        .iter()
        .filter(|(name, calls)| before.get(*name) != Some(calls))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The commands among `names` that Redis flags `write` (`COMMAND INFO`; `a|b` for a
/// subcommand).
pub async fn write_commands(conn: &mut MultiplexedConnection, names: &[String]) -> Vec<String> {
    let mut writes = Vec::new();
    for name in names {
        let (cmd, sub) = match name.split_once('|') {
            Some((c, s)) => (c, Some(s)),
            None => (name.as_str(), None),
        };
        let doc: redis::Value = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(cmd)
            .query_async(conn)
            .await
            .expect("COMMAND INFO");
        let flags = flags(&doc, name, sub.is_some());
        if flags.iter().any(|f| f == "write") {
            writes.push(name.clone());
        }
    }
    writes
}

fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).to_string()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn flags(doc: &redis::Value, name: &str, sub: bool) -> Vec<String> {
    let redis::Value::Array(entries) = doc else {
        return vec![];
    };
    for entry in entries {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let this = fields.first().and_then(text).unwrap_or_default();
        if this == name {
            return match fields.get(2) {
                Some(redis::Value::Array(f)) | Some(redis::Value::Set(f)) => {
                    f.iter().filter_map(text).collect()
                }
                _ => vec![],
            };
        }
        if sub && let Some(subs) = fields.get(9) {
            let found = flags(subs, name, false);
            if !found.is_empty() {
                return found;
            }
        }
    }
    vec![]
}

/// Every key of `conn`'s node under `prefix`, with its `DUMP` (replicas included).
pub async fn dumps(conn: &mut MultiplexedConnection, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    // A cluster replica answers reads only after READONLY (elsewhere an error, ignored).
    let _: redis::RedisResult<()> = redis::cmd("READONLY").query_async(conn).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(conn)
        .await
        .expect("KEYS");
    let mut out = BTreeMap::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(conn)
            .await
            .expect("DUMP");
        out.insert(key, dump);
    }
    out
}

/// Polls `check` every 100 ms until it holds, for up to `limit`.
pub async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
