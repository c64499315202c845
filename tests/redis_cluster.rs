//! Redis Cluster, for real: three primaries and three replicas on free loopback ports
//! (`redis-server --cluster-enabled yes` + `redis-cli --cluster create`), started and stopped
//! here. Keys spread over every node; the API is read continuously through a resharding
//! (`redis-cli --cluster reshard`, so `ASK`/`MOVED` happen) and a primary killed and replaced
//! by its replica: no 0, no missing series, only the true value or 503. Every node is audited:
//! no write command ran, and every key's `DUMP` is unchanged.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis_topology::{Node, command_calls, dumps, ran_between, until, write_commands};
use common::{Adapter, quantity};

/// A node's keys (`DUMP` each) and command counts when an audit starts.
type Audit = (BTreeMap<String, Vec<u8>>, BTreeMap<String, u64>);

struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(&[]).await
    }

    /// Three primaries and three replicas, each node started with `extra` arguments too.
    async fn start_with(extra: &[&str]) -> Cluster {
        let args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "1000",
            "--repl-diskless-sync-delay",
            "0",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            nodes.push(Node::start("cluster", &args).await);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (make test installs it)");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { nodes };
        cluster.until_ok().await;
        cluster
    }

    async fn until_ok(&self) {
        until(
            "cluster_state:ok on every live node",
            Duration::from_secs(30),
            || async {
                for n in self.nodes.iter().filter(|n| n.is_running()) {
                    let mut c = n.conn().await;
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await
                        .unwrap_or_default();
                    if !info.contains("cluster_state:ok") {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    /// A connection to any node still running.
    async fn live_conn(&self) -> redis::aio::MultiplexedConnection {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a live node")
            .conn()
            .await
    }

    /// `CLUSTER NODES` as a live node sees it.
    async fn nodes_text(&self) -> String {
        let mut c = self.live_conn().await;
        redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .expect("CLUSTER NODES")
    }

    /// (node id, port) of every live primary that owns slots.
    async fn primaries(&self) -> Vec<(String, u16)> {
        let text = self.nodes_text().await;
        text.lines()
            .filter(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() > 8 && f[2].contains("master") && !f[2].contains("fail")
            })
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let port = f[1]
                    .split(['@', ':'])
                    .nth(1)
                    .expect("port")
                    .parse()
                    .expect("port");
                (f[0].to_string(), port)
            })
            .collect()
    }

    /// The port of a replica of the primary `id` (waiting up to 10 s for the node asked to
    /// learn of it: just after `cluster create`, gossip may not have told every node yet).
    async fn replica_of(&self, id: &str) -> u16 {
        let started = Instant::now();
        loop {
            let text = self.nodes_text().await;
            let found = text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() > 3 && f[2].contains("slave") && f[3] == id)
                    .then(|| f[1].split(['@', ':']).nth(1)?.parse().ok())
                    .flatten()
            });
            match found {
                Some(port) => return port,
                None if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => panic!("no replica of {id}: {text}"),
            }
        }
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes.iter().find(|n| n.port == port).expect("a node")
    }

    /// A cluster connection for writing test data (redis-rs' `cluster` is not built here, so
    /// writes go to the owner `CLUSTER KEYSLOT` + `CLUSTER SLOTS` name).
    async fn owner_of(&self, key: &str) -> u16 {
        let mut c = self.live_conn().await;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .expect("KEYSLOT");
        let map: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut c)
            .await
            .expect("SLOTS");
        for range in map {
            let redis::Value::Array(f) = range else {
                continue;
            };
            let (redis::Value::Int(a), redis::Value::Int(b), redis::Value::Array(p)) =
                (&f[0], &f[1], &f[2])
            else {
                continue;
            };
            if (*a..=*b).contains(&slot)
                && let redis::Value::Int(port) = p[1]
            {
                return port as u16;
            }
        }
        panic!("slot {slot} of {key} has no owner");
    }

    /// Resets every node's command statistics and takes every key's `DUMP`, for
    /// [`Cluster::audit_nothing_written`].
    async fn audit_start(&self) -> Vec<Audit> {
        let mut before = Vec::new();
        for n in &self.nodes {
            let mut c = n.conn().await;
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut c)
                .await
                .expect("resetstat");
            before.push((dumps(&mut c, "").await, command_calls(&mut c).await));
        }
        before
    }

    /// No node ran a write command since [`Cluster::audit_start`], and no key changed.
    async fn audit_nothing_written(&self, before: &[Audit]) {
        for (n, (dumps_before, calls_before)) in self.nodes.iter().zip(before) {
            let mut c = n.conn().await;
            let ran = ran_between(calls_before, &command_calls(&mut c).await);
            let writes = write_commands(&mut c, &ran).await;
            assert!(
                writes.is_empty(),
                "node {}: write commands {writes:?} ran ({ran:?})",
                n.port
            );
            assert_eq!(
                &dumps(&mut c, "").await,
                dumps_before,
                "node {}: a key changed",
                n.port
            );
        }
    }

    async fn rpush(&self, key: &str, n: usize) {
        let mut c = self.node(self.owner_of(key).await).conn().await;
        for i in 0..n {
            let _: i64 = redis::cmd("RPUSH")
                .arg(key)
                .arg(format!("{{\"enqueued_at\":{}}}", 1_700_000_000 + i))
                .query_async(&mut c)
                .await
                .expect("RPUSH");
        }
        // The write has reached the replica (and been applied there) before anything else
        // runs: a promoted replica holds the same data, and no replicated write lands on a
        // replica after the read-only audit starts. `WAIT` waits for this connection's own
        // writes, so it is sent here, not on a fresh connection (whose offset is 0).
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query_async(&mut c)
            .await
            .expect("WAIT");
        assert_eq!(acked, 1, "{key}: no replica acknowledged the write");
    }
}

const KEYS: usize = 30;

fn config(seeds: &[String]) -> String {
    format!(
        "poll_interval: 200ms\nmax_backoff: 1s\npoll_timeout: 1s\ndiscovery_interval: 1s\nsources:\n  jobs:\n    redis:\n      cluster: {{nodes: [{}]}}\nmetrics:\n  - {{name: depth, source: jobs, measure: length, redis: {{type: list, pattern: \"q:*\"}}}}\n  - {{name: exact, source: jobs, measure: length, redis: {{type: list, key: \"q:7\"}}}}\n  - {{name: tagged, source: jobs, measure: oldest_age_seconds, redis: {{type: list, key: \"{{bull:embed}}:wait\", oldest_at: head, timestamp: {{json_pointer: /enqueued_at, unit: s}}}}}}\n",
        seeds.join(", ")
    )
}

/// Each key `q:<i>` holds `i + 1` elements.
fn want(key: &str) -> f64 {
    key.strip_prefix("q:")
        .expect("q:")
        .parse::<f64>()
        .expect("index")
        + 1.0
}

/// Whether every primary has a tracking connection (a push anywhere wakes the poll).
async fn watching(adapter: &Adapter) -> bool {
    let (_, metrics) = adapter.get_text("/metrics").await;
    metrics
        .lines()
        .any(|l| l == "qma_push_watching{source=\"jobs\"} 1")
}

/// The API read continuously (each of `urls` in turn, every 20 ms) until [`Reader::finish`];
/// `judge` says what is wrong with each answer (url, status, body), if anything.
struct Reader {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    bad: Arc<Mutex<Vec<String>>>,
}

impl Reader {
    fn start(
        adapter: &Adapter,
        urls: Vec<String>,
        mut judge: impl FnMut(&str, u16, &serde_json::Value) -> Vec<String> + Send + 'static,
    ) -> Reader {
        let bad: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (http, b, st) = (adapter.http.clone(), bad.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                for url in &urls {
                    if let Ok(r) = http.get(url).send().await {
                        let status = r.status().as_u16();
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        let wrong = judge(url, status, &body);
                        b.lock().unwrap().extend(wrong);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Reader { stop, task, bad }
    }

    /// The wrong answers seen so far.
    fn wrong_so_far(&self) -> Vec<String> {
        self.bad.lock().unwrap().clone()
    }

    /// Stops reading; every wrong answer seen.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("reader");
        self.bad.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_and_a_failover_serve_the_truth_or_503_never_0_or_a_gap() {
    let mut cluster = Cluster::start().await;
    for i in 0..KEYS {
        cluster.rpush(&format!("q:{i}"), i + 1).await;
    }
    cluster.rpush("{bull:embed}:wait", 2).await;
    let primaries = cluster.primaries().await;
    assert_eq!(primaries.len(), 3);
    // The keys are spread over every primary.
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..KEYS {
        owners.insert(cluster.owner_of(&format!("q:{i}")).await);
    }
    assert_eq!(owners.len(), 3, "keys on every primary");

    // Read-only audit: stats and dumps of every node before the adapter runs.
    let before = cluster.audit_start().await;

    // `check` reads the cluster as `serve` will: every series with its value.
    let yaml = config(&[cluster.nodes[0].addr()]);
    let parsed =
        queue_metrics_adapter::config::Config::from_yaml(&yaml, std::path::Path::new("c.yaml"))
            .expect("config");
    let report = queue_metrics_adapter::check::run(&parsed)
        .await
        .expect("check");
    assert_eq!(report.failed, 0, "{}", report.table);
    assert!(
        report.table.contains("queue=\"29\"") && report.table.contains("tagged"),
        "{}",
        report.table
    );

    // One seed is enough: the rest is learned from CLUSTER SLOTS.
    let adapter = Adapter::start(&yaml).await;
    let url = format!(
        "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/depth",
        adapter.base
    );
    until("every key served", Duration::from_secs(20), || async {
        let (s, body) = adapter
            .get_json(url.strip_prefix(&adapter.base).unwrap())
            .await;
        s == 200 && body["items"].as_array().is_some_and(|i| i.len() == KEYS)
    })
    .await;
    adapter.polls(5).await;
    // Every primary has a tracking connection: a push anywhere wakes the poll.
    let watching = || watching(&adapter);
    assert!(watching().await, "tracking on every primary");
    let (status, body) = adapter.metric("tagged", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(quantity(body["items"][0]["value"].as_str().unwrap()) > 1e6);

    // Nothing was written, nothing changed, on any node.
    cluster.audit_nothing_written(&before).await;

    // A slot caught mid-migration answers ASK for a key already moved, and MOVED once the
    // move is final: both are followed within the poll, so every answer stays 200 and true.
    let key = "q:0";
    let source = cluster.owner_of(key).await;
    let id_of = |port: u16| {
        primaries
            .iter()
            .find(|(_, p)| *p == port)
            .map(|(id, _)| id.clone())
            .expect("a primary")
    };
    let target = primaries
        .iter()
        .map(|(_, p)| *p)
        .find(|p| *p != source)
        .expect("another primary");
    let mut a = cluster.node(source).conn().await;
    let mut b = cluster.node(target).conn().await;
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut a)
        .await
        .expect("slot");
    let setslot = |state: &str, id: String| {
        let mut c = redis::cmd("CLUSTER");
        c.arg("SETSLOT").arg(slot).arg(state).arg(id);
        c
    };
    let _: () = setslot("IMPORTING", id_of(source))
        .query_async(&mut b)
        .await
        .expect("importing");
    let _: () = setslot("MIGRATING", id_of(target))
        .query_async(&mut a)
        .await
        .expect("migrating");
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(target)
        .arg(key)
        .arg(0)
        .arg(5000)
        .query_async(&mut a)
        .await
        .expect("MIGRATE");
    let all_true = |status: u16, body: &serde_json::Value| {
        status == 200
            && body["items"].as_array().is_some_and(|items| {
                items.len() == KEYS
                    && items.iter().all(|i| {
                        quantity(i["value"].as_str().unwrap_or("x"))
                            == want(&format!(
                                "q:{}",
                                i["metricLabels"]["queue"].as_str().unwrap_or("x")
                            ))
                    })
            })
    };
    for phase in ["ASK (slot migrating)", "MOVED (slot moved)"] {
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            let (status, body) = adapter.metric("depth", None).await;
            assert!(all_true(status, &body), "{phase}: {status} {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if phase.starts_with("ASK") {
            for (_, p) in &primaries {
                let mut c = cluster.node(*p).conn().await;
                let _: () = setslot("NODE", id_of(target))
                    .query_async(&mut c)
                    .await
                    .expect("node");
            }
        }
    }

    // Read continuously from here on.
    let counts: Arc<Mutex<(usize, usize)>> = Arc::default();
    let reader = {
        let counts = counts.clone();
        Reader::start(&adapter, vec![url.clone()], move |_, status, body| {
            let mut c = counts.lock().unwrap();
            match status {
                200 => {
                    c.0 += 1;
                    let items = body["items"].as_array().cloned().unwrap_or_default();
                    let mut got: BTreeMap<String, f64> = BTreeMap::new();
                    for item in &items {
                        // `key` is served encoded (`q:7` has a colon); `queue` is the part
                        // `q:*` matched, valid as it is.
                        let queue = item["metricLabels"]["queue"].as_str().unwrap_or("?");
                        got.insert(
                            format!("q:{queue}"),
                            quantity(item["value"].as_str().unwrap_or("0")),
                        );
                    }
                    let mut bad = Vec::new();
                    if got.len() != KEYS {
                        bad.push(format!("{} series, not {KEYS}", got.len()));
                    }
                    for (k, v) in got {
                        if v != want(&k) {
                            bad.push(format!("{k} = {v}"));
                        }
                    }
                    bad
                }
                503 => {
                    c.1 += 1;
                    Vec::new()
                }
                other => vec![format!("status {other}: {body}")],
            }
        })
    };

    // 1. Resharding: a third of the first primary's slots move to the second, key by key.
    let (from, to) = (&primaries[0], &primaries[1]);
    let started = Instant::now();
    let out = Command::new("redis-cli")
        .args(["--cluster", "reshard", &cluster.nodes[0].addr()])
        .args(["--cluster-from", &from.0, "--cluster-to", &to.0])
        .args([
            "--cluster-slots",
            "2000",
            "--cluster-yes",
            "--cluster-pipeline",
            "1",
        ])
        .output()
        .expect("redis-cli reshard");
    assert!(
        out.status.success(),
        "reshard: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resharded = started.elapsed();
    cluster.until_ok().await;
    adapter.polls(5).await;

    // 2. A primary dies. The reader sees its keys fail (503) while the rest of the cluster
    // answers, until the other primaries mark it failed and elect its replica (node timeout 1 s).
    let (victim_id, victim) = primaries[2].clone();
    let replica = cluster.replica_of(&victim_id).await;
    cluster
        .nodes
        .iter_mut()
        .find(|n| n.port == victim)
        .expect("victim")
        .kill();
    let killed = Instant::now();
    // While the dead primary's keys answer 503, a key on a live primary is still served.
    let mut healthy = None;
    for i in 0..KEYS {
        let key = format!("q:{i}");
        if cluster.owner_of(&key).await != victim {
            healthy = Some(key);
            break;
        }
    }
    let healthy = healthy.expect("a key on a live primary");
    until(
        "the dead primary's keys fail",
        Duration::from_secs(10),
        || async { adapter.metric("depth", None).await.0 == 503 },
    )
    .await;
    let (status, body) = adapter
        .metric(
            "depth",
            Some(&format!("queue={}", healthy.trim_start_matches("q:"))),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        quantity(body["items"][0]["value"].as_str().unwrap()),
        want(&healthy)
    );
    until(
        "the replica is elected in place of the dead primary",
        Duration::from_secs(30),
        || async { cluster.primaries().await.iter().any(|(_, p)| *p == replica) },
    )
    .await;
    let elected = killed.elapsed();
    cluster.until_ok().await;
    until(
        "every key served again",
        Duration::from_secs(20),
        || async {
            let (s, body) = adapter
                .get_json(url.strip_prefix(&adapter.base).unwrap())
                .await;
            s == 200 && body["items"].as_array().is_some_and(|i| i.len() == KEYS)
        },
    )
    .await;
    let back = killed.elapsed();
    until(
        "tracking follows the new primary",
        Duration::from_secs(20),
        watching,
    )
    .await;
    adapter.polls(3).await;
    let bad = reader.finish().await;
    let (ok, unavailable) = *counts.lock().unwrap();
    println!(
        "answers: {ok} 200, {unavailable} 503; reshard took {resharded:?}; replica elected {elected:?} and all keys back {back:?} after the kill"
    );
    assert!(
        bad.is_empty(),
        "wrong answers: {:?}",
        &bad[..bad.len().min(10)]
    );
    assert!(ok > 10, "hardly read: {ok}");
    adapter.stop().await;
}

/// What the reader saw of the stopped primary's key.
#[derive(Default)]
struct VictimSeen {
    first_503: Option<Instant>,
    last_503: Option<Instant>,
    /// Whether the value written after the failover has been served.
    new_seen: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_fails_only_its_own_keys_and_its_stale_copy_is_never_served() {
    // With full coverage required (Redis's default), the whole cluster refuses every command
    // (CLUSTERDOWN, served as 503 naming it) from the moment the hung primary is marked failed
    // until its replica is elected: that is Redis's answer, not the adapter's. Without it, the
    // other primaries keep answering, which is what this test is about.
    let mut cluster = Cluster::start_with(&["--cluster-require-full-coverage", "no"]).await;
    for i in 0..KEYS {
        cluster.rpush(&format!("q:{i}"), i + 1).await;
    }
    let primaries = cluster.primaries().await;
    assert_eq!(primaries.len(), 3);
    let (victim_id, victim) = primaries[2].clone();
    let replica = cluster.replica_of(&victim_id).await;
    // One key on the victim, one on each other primary.
    let mut victim_key = None;
    let mut healthy: BTreeMap<u16, String> = BTreeMap::new();
    for i in 0..KEYS {
        let key = format!("q:{i}");
        match cluster.owner_of(&key).await {
            p if p == victim => {
                victim_key.get_or_insert(key);
            }
            p => {
                healthy.entry(p).or_insert(key);
            }
        }
    }
    let victim_key = victim_key.expect("a key on the victim");
    assert_eq!(healthy.len(), 2, "a key on each other primary");
    let (old, new) = (want(&victim_key), want(&victim_key) + 3.0);

    let adapter = Adapter::start(&config(&[cluster.nodes[0].addr()])).await;
    let url_of = |key: &str| {
        format!(
            "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/depth?labelSelector=queue%3D{}",
            adapter.base,
            key.trim_start_matches("q:")
        )
    };
    let victim_url = url_of(&victim_key);
    until("every key served", Duration::from_secs(20), || async {
        let (s, body) = adapter.metric("depth", None).await;
        s == 200 && body["items"].as_array().is_some_and(|i| i.len() == KEYS)
    })
    .await;
    until("tracking on every primary", Duration::from_secs(10), || {
        watching(&adapter)
    })
    .await;

    // Keys on the other primaries: 200 and true at every read. The victim's key: 503 or the
    // true value, and never the old value once the new one has been served.
    let seen: Arc<Mutex<VictimSeen>> = Arc::default();
    let mut urls: Vec<String> = healthy.values().map(|k| url_of(k)).collect();
    urls.push(victim_url.clone());
    let reader = {
        let (seen, victim_url) = (seen.clone(), victim_url.clone());
        Reader::start(&adapter, urls, move |url, status, body| {
            let value = (status == 200)
                .then(|| quantity(body["items"][0]["value"].as_str().unwrap_or("x")));
            if url != victim_url {
                return match value {
                    Some(v) if v == want(&format!("q:{}", url.rsplit("%3D").next().unwrap())) => {
                        vec![]
                    }
                    _ => vec![format!("a key on a live primary: {status} {body}")],
                };
            }
            let mut s = seen.lock().unwrap();
            match (status, value) {
                (503, _) => {
                    let now = Instant::now();
                    s.first_503.get_or_insert(now);
                    s.last_503 = Some(now);
                    vec![]
                }
                (200, Some(v)) if v == new => {
                    s.new_seen = true;
                    vec![]
                }
                (200, Some(v)) if v == old && !s.new_seen => vec![],
                (200, Some(v)) if v == old => vec![format!("stale {v} served after {new}")],
                _ => vec![format!("the stopped primary's key: {status} {body}")],
            }
        })
    };
    adapter.polls(3).await;

    // 1. The victim hangs: its keys answer 503 naming it; the rest is served from the same polls.
    cluster
        .nodes
        .iter_mut()
        .find(|n| n.port == victim)
        .expect("victim")
        .stop();
    let stopped = Instant::now();
    until(
        "the hung primary's key fails",
        Duration::from_secs(10),
        || async {
            let (s, _) = adapter
                .get_json(victim_url.strip_prefix(&adapter.base).unwrap())
                .await;
            s == 503
        },
    )
    .await;
    // A few polls with the primary hung: every other key was served throughout.
    adapter.polls(3).await;
    let bad = reader.wrong_so_far();
    assert!(
        bad.is_empty(),
        "while a primary hangs ({}): {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let (_, body) = adapter
        .get_json(victim_url.strip_prefix(&adapter.base).unwrap())
        .await;
    assert!(
        body.to_string().contains(&format!(
            "cluster node 127.0.0.1:{victim} did not answer within"
        )),
        "{body}"
    );
    until(
        "tracking falls back to polling",
        Duration::from_secs(10),
        || async { !watching(&adapter).await },
    )
    .await;

    // 2. Its replica is elected (node timeout 1 s): the true value is back.
    until(
        "the replica is elected in place of the hung primary",
        Duration::from_secs(30),
        || async { cluster.primaries().await.iter().any(|(_, p)| *p == replica) },
    )
    .await;
    let elected = stopped.elapsed();
    until(
        "the hung primary's key served from its replica",
        Duration::from_secs(20),
        || async { adapter.metric("depth", None).await.0 == 200 },
    )
    .await;
    let back = stopped.elapsed();
    until(
        "tracking follows the new primary",
        Duration::from_secs(20),
        || watching(&adapter),
    )
    .await;

    // 3. The new primary takes writes the old one never saw, then the old one wakes, still
    // claiming its slots until the cluster tells it otherwise: its copy is never served.
    let mut c = cluster.node(replica).conn().await;
    for i in 0..3 {
        let _: i64 = redis::cmd("RPUSH")
            .arg(&victim_key)
            .arg(format!("{{\"enqueued_at\":{}}}", 1_800_000_000 + i))
            .query_async(&mut c)
            .await
            .expect("RPUSH on the new primary");
    }
    until("the new value served", Duration::from_secs(10), || async {
        seen.lock().unwrap().new_seen
    })
    .await;
    cluster
        .nodes
        .iter_mut()
        .find(|n| n.port == victim)
        .expect("victim")
        .cont();
    until(
        "the woken primary rejoins as a replica",
        Duration::from_secs(30),
        || async {
            let mut c = cluster.node(victim).conn().await;
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            role.first() == Some(&redis::Value::BulkString(b"slave".to_vec()))
        },
    )
    .await;
    cluster.until_ok().await;
    adapter.polls(10).await;
    let bad = reader.finish().await;
    let (first_503, last_503) = {
        let s = seen.lock().unwrap();
        (s.first_503, s.last_503)
    };
    let unavailable = match (first_503, last_503) {
        (Some(a), Some(b)) => b.duration_since(a),
        _ => Duration::ZERO,
    };
    println!(
        "hung primary: its key 503 for {unavailable:?} (first 503 {:?} after the stop); replica elected {elected:?}, value back {back:?} after the stop",
        first_503.map(|t| t.duration_since(stopped))
    );
    assert!(
        bad.is_empty(),
        "wrong answers ({}): {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert!(first_503.is_some(), "the hung primary's key never failed");
    adapter.stop().await;
}

/// BullMQ on a cluster, as its real client writes it (`ioredis` `Cluster`, the `{bull}` hash
/// tag its docs require): six jobs in `embed` (one prioritized), two in `rerank`.
const BULLMQ_CLUSTER_ENQUEUE: &str = r#"
const { Queue } = require('bullmq');
const { Cluster } = require('ioredis');
const [host, port] = process.argv.slice(1);
(async () => {
  const connection = new Cluster([{ host, port: Number(port) }]);
  const embed = new Queue('embed', { prefix: '{bull}', connection });
  for (let n = 0; n < 5; n++) await embed.add('embed', { n });
  await embed.add('embed', { n: 5 }, { priority: 3 });
  const rerank = new Queue('rerank', { prefix: '{bull}', connection });
  for (let n = 0; n < 2; n++) await rerank.add('rerank', { n });
  await embed.close();
  await rerank.close();
  await connection.quit();
  console.log('{}');
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// Job-library presets on a cluster: `*` finds queues by SCAN on every primary (BullMQ, its
/// real client) and from a registry set on whichever node owns it (Sidekiq's `queues`, the
/// queues themselves on other nodes); each series' keys are read where they live. Nothing is
/// written on any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_library_presets_read_a_cluster_across_its_nodes() {
    let cluster = Cluster::start().await;
    let seed = &cluster.nodes[0];
    common::job_libraries::node(
        BULLMQ_CLUSTER_ENQUEUE,
        &["127.0.0.1", &seed.port.to_string()],
        Duration::from_secs(60),
    )
    .await;
    // Sidekiq's layout, by hand: its queues spread over the primaries.
    let names = ["a", "b", "c", "d", "e", "f"];
    let mut owners = std::collections::BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let key = format!("queue:{name}");
        cluster.rpush(&key, i + 1).await;
        owners.insert(cluster.owner_of(&key).await);
    }
    assert!(owners.len() > 1, "Sidekiq's queues on several primaries");
    let mut c = cluster.node(cluster.owner_of("queues").await).conn().await;
    let _: i64 = redis::cmd("SADD")
        .arg("queues")
        .arg(&names[..])
        .query_async(&mut c)
        .await
        .expect("SADD");
    let _: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query_async(&mut c)
        .await
        .expect("WAIT");
    let before = cluster.audit_start().await;

    let adapter = Adapter::start(&format!(
        "poll_interval: 200ms\ndiscovery_interval: 1s\nsources:\n  jobs:\n    redis:\n      cluster: {{nodes: [{}]}}\nmetrics:\n  - {{name: bull, source: jobs, measure: length, redis: {{library: bullmq, queue: \"*\", prefix: \"{{bull}}\"}}}}\n  - {{name: bull_age, source: jobs, measure: oldest_age_seconds, redis: {{library: bullmq, queue: embed, prefix: \"{{bull}}\"}}}}\n  - {{name: sidekiq, source: jobs, measure: length, redis: {{library: sidekiq, queue: \"*\"}}}}\n",
        seed.addr()
    ))
    .await;
    for (queue, want) in [("embed", 6.0), ("rerank", 2.0)] {
        let selector = format!("queue={queue}");
        adapter
            .wait_for(
                "bull",
                Some(&selector),
                Duration::from_secs(20),
                |s, body| {
                    s == 200 && quantity(body["items"][0]["value"].as_str().unwrap_or("x")) == want
                },
            )
            .await;
    }
    let (status, body) = adapter.metric("bull_age", None).await;
    assert_eq!(status, 200, "{body}");
    for (i, name) in names.iter().enumerate() {
        let selector = format!("queue={name}");
        adapter
            .wait_for(
                "sidekiq",
                Some(&selector),
                Duration::from_secs(20),
                |s, body| {
                    s == 200
                        && quantity(body["items"][0]["value"].as_str().unwrap_or("x"))
                            == (i + 1) as f64
                },
            )
            .await;
    }
    adapter.stop().await;
    cluster.audit_nothing_written(&before).await;

    // `discover` from one seed finds the same queues on every node: BullMQ's under its
    // hash-tagged prefix, Sidekiq's from its registry.
    let found =
        queue_metrics_adapter::discover::run(&queue_metrics_adapter::cli::discover::DiscoverArgs {
            redis_cluster: vec![seed.addr()],
            ..Default::default()
        })
        .await
        .expect("discover");
    for needle in [
        "library: bullmq, queue: \"embed\", prefix: \"{bull}\"",
        "library: bullmq, queue: \"rerank\", prefix: \"{bull}\"",
        "library: sidekiq, queue: \"a\"",
        "library: sidekiq, queue: \"f\"",
        "cluster: {nodes: [",
    ] {
        assert!(found.config.contains(needle), "{needle}:\n{}", found.config);
    }
    assert!(
        found
            .summary
            .contains("every key belongs to a library found"),
        "{}",
        found.summary
    );
}
