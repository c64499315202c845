//! Redis Sentinel, for real: a master, a replica and three sentinels on free loopback ports,
//! started and stopped here. The API is read continuously through a `SENTINEL FAILOVER` and
//! then a killed master: every answer is 503 or the true length, never 0 and never a value
//! older than one already served; after each switch the demoted (or dead) node gets no more
//! reads, and the true value is back soon after the sentinels agree on the new master.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis_topology::{Node, command_calls, dumps, ran_between, until, write_commands};
use common::{Adapter, cmd, quantity, value_is};

struct Set {
    nodes: Vec<Node>,
    sentinels: Vec<Node>,
}

const MASTER: &str = "qma";

impl Set {
    async fn start() -> Set {
        let master = Node::start("master", &[]).await;
        let replica = Node::start(
            "replica",
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
        )
        .await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(Node::sentinel(MASTER, master.port).await);
        }
        let set = Set {
            nodes: vec![master, replica],
            sentinels,
        };
        set.until_replica_linked().await;
        set
    }

    /// The master the sentinels (the first live one) name.
    async fn master_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            let mut c = s.conn().await;
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER)
                .query_async(&mut c)
                .await
                .ok()
                .flatten();
            if let Some((_, port)) = addr {
                return Some(port);
            }
        }
        None
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of the set")
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of the set")
    }

    /// Until every sentinel sees a replica of the current master that is up and linked.
    async fn until_replica_linked(&self) {
        until(
            "a replica linked to the master",
            Duration::from_secs(30),
            || async {
                let Some(port) = self.master_port().await else {
                    return false;
                };
                for s in &self.sentinels {
                    let mut c = s.conn().await;
                    let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(MASTER)
                        .query_async(&mut c)
                        .await
                        .unwrap_or_default();
                    let linked = replicas.iter().any(|r| {
                        let field = |k: &str| {
                            r.chunks(2)
                                .find(|kv| kv[0] == k)
                                .map(|kv| kv[1].clone())
                                .unwrap_or_default()
                        };
                        field("flags") == "slave"
                            && field("master-link-status") == "ok"
                            && field("master-port") == port.to_string()
                    });
                    if !linked {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    fn config(&self, key: &str, read_from: &str) -> String {
        let addresses: Vec<String> = self.sentinels.iter().map(|s| s.addr()).collect();
        format!(
            "poll_interval: 200ms\nmax_backoff: 1s\npoll_timeout: 1s\nsources:\n  jobs:\n    redis:\n      sentinel: {{addresses: [{}], master_name: {MASTER}, read_from: {read_from}}}\nmetrics:\n  - {{name: depth, source: jobs, measure: length, redis: {{type: list, key: \"{key}\"}}}}\n",
            addresses.join(", ")
        )
    }
}

/// Every answer the reader saw: (status, value if 200).
type Seen = Arc<Mutex<Vec<(u16, Option<f64>)>>>;

fn read_continuously(
    adapter: &Adapter,
) -> (
    Seen,
    tokio::task::JoinHandle<()>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let seen: Seen = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (http, url) = (
        adapter.http.clone(),
        format!(
            "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/depth",
            adapter.base
        ),
    );
    let (s, st) = (seen.clone(), stop.clone());
    let task = tokio::spawn(async move {
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(r) = http.get(&url).send().await {
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let value = (status == 200)
                    .then(|| quantity(body["items"][0]["value"].as_str().expect("a value")));
                s.lock().unwrap().push((status, value));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    (seen, task, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_and_a_killed_master_serve_503_or_the_truth_never_a_demoted_node() {
    let mut set = Set::start().await;
    let key = "qma-test:sentinel:jobs";
    let first = set.master_port().await.expect("a master");
    let mut m = set.node(first).conn().await;
    for i in 0..5 {
        cmd::<i64>(&mut m, &["LPUSH", key, &format!("job-{i}")]).await;
    }
    let adapter = Adapter::start(&set.config(key, "master")).await;
    adapter
        .wait_for("depth", None, Duration::from_secs(15), value_is(5.0))
        .await;
    let (seen, reader, stop) = read_continuously(&adapter);

    // 1. A planned failover: the old master is demoted to a replica and keeps answering.
    let mut s = set.sentinels[0].conn().await;
    let asked = Instant::now();
    cmd::<String>(&mut s, &["SENTINEL", "FAILOVER", MASTER]).await;
    until(
        "the sentinels name a new master",
        Duration::from_secs(30),
        || async { set.master_port().await.is_some_and(|p| p != first) },
    )
    .await;
    let second = set.master_port().await.expect("a master");
    let elected = Instant::now();
    let mut m2 = set.node(second).conn().await;
    until(
        "the new master accepts writes",
        Duration::from_secs(15),
        || {
            let mut c = m2.clone();
            let key = key.to_string();
            async move {
                redis::cmd("LPUSH")
                    .arg(&key)
                    .arg("job-5")
                    .query_async::<i64>(&mut c)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    cmd::<i64>(&mut m2, &["LPUSH", key, "job-6"]).await;
    adapter
        .wait_for("depth", None, Duration::from_secs(15), value_is(7.0))
        .await;
    let back_after_failover = elected.elapsed();
    let back_after_asked = asked.elapsed();
    // The demoted node gets no more reads from the adapter.
    let mut old = set.node(first).conn().await;
    let before = command_calls(&mut old)
        .await
        .get("llen")
        .copied()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = command_calls(&mut old)
        .await
        .get("llen")
        .copied()
        .unwrap_or(0);
    assert_eq!(before, after, "the demoted master was still read");

    // 2. The new master is killed: the sentinels promote the old one (now its replica).
    set.until_replica_linked().await;
    until(
        "the replica holds all 7",
        Duration::from_secs(10),
        || async {
            let mut c = set.node(first).conn().await;
            redis::cmd("LLEN")
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
                .is_ok_and(|n| n == 7)
        },
    )
    .await;
    set.node_mut(second).kill();
    let killed = Instant::now();
    until(
        "the sentinels promote the replica",
        Duration::from_secs(30),
        || async { set.master_port().await.is_some_and(|p| p != second) },
    )
    .await;
    let third = set.master_port().await.expect("a master");
    assert_eq!(third, first);
    let elected = Instant::now();
    let m3 = set.node(third).conn().await;
    until(
        "the promoted master accepts writes",
        Duration::from_secs(15),
        || {
            let mut c = m3.clone();
            let key = key.to_string();
            async move {
                redis::cmd("LPUSH")
                    .arg(&key)
                    .arg("job-7")
                    .query_async::<i64>(&mut c)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    adapter
        .wait_for("depth", None, Duration::from_secs(15), value_is(8.0))
        .await;
    let back_after_kill = elected.elapsed();
    let back_after_killed = killed.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.expect("reader");

    let seen = seen.lock().unwrap().clone();
    let mut highest = 0.0;
    for (status, value) in &seen {
        match (status, value) {
            (200, Some(v)) => {
                assert!(
                    (5.0..=8.0).contains(v) && v.fract() == 0.0,
                    "served {v}, which the master never held: {seen:?}"
                );
                assert!(
                    *v >= highest,
                    "served {v} after {highest}: an older node's answer"
                );
                highest = *v;
            }
            (503, _) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    println!(
        "answers: {} ({} 503); value back {back_after_failover:?} after the election ({back_after_asked:?} after SENTINEL FAILOVER), {back_after_kill:?} after the election ({back_after_killed:?} after the kill)",
        seen.len(),
        seen.iter().filter(|(s, _)| *s == 503).count()
    );
    // Poll interval 200 ms, backoff capped at 1 s, timeout 1 s: well within 5 s each.
    assert!(
        back_after_failover < Duration::from_secs(5),
        "{back_after_failover:?}"
    );
    assert!(
        back_after_kill < Duration::from_secs(5),
        "{back_after_kill:?}"
    );
    adapter.stop().await;
}

/// Two RQ jobs in `rerank`, enqueued through the sentinel at argv[1] for master argv[2].
const RQ_THROUGH_SENTINEL: &str = r#"
import sys
from redis.sentinel import Sentinel
from rq import Queue
host, port = sys.argv[1].rsplit(":", 1)
master = Sentinel([(host, int(port))]).master_for(sys.argv[2])
q = Queue("rerank", connection=master)
for n in range(2):
    q.enqueue("builtins.abs", n)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_replica_reads_the_replica_only_and_never_writes() {
    let set = Set::start().await;
    let prefix = "qma-test:sentinel-replica:";
    let key = format!("{prefix}jobs");
    let master_port = set.master_port().await.expect("a master");
    let replica_port = set
        .nodes
        .iter()
        .map(|n| n.port)
        .find(|p| *p != master_port)
        .expect("replica");
    let mut m = set.node(master_port).conn().await;
    // bee-queue's layout under a prefix of the test's, read by its preset for every queue;
    // written first, so that the replica holding the list below holds these too.
    let bee = format!("{prefix}bq");
    for (i, job) in ["7", "8"].iter().enumerate() {
        cmd::<i64>(&mut m, &["LPUSH", &format!("{bee}:embed:waiting"), job]).await;
        let json = format!(
            r#"{{"data":{{}},"options":{{"timestamp":{}}},"status":"created"}}"#,
            1_795_000_000_000u64 + i as u64
        );
        cmd::<i64>(&mut m, &["HSET", &format!("{bee}:embed:jobs"), job, &json]).await;
    }
    // RQ's real client, through the sentinels as RQ users connect, for `discover`.
    let addresses: Vec<String> = set.sentinels.iter().map(|s| s.addr()).collect();
    common::job_libraries::python(
        RQ_THROUGH_SENTINEL,
        &[&addresses[0], MASTER],
        Duration::from_secs(60),
    )
    .await;
    for i in 0..3 {
        cmd::<i64>(&mut m, &["RPUSH", &key, &format!("job-{i}")]).await;
    }
    let mut r = set.node(replica_port).conn().await;
    until("the replica has the data", Duration::from_secs(10), || {
        let mut c = r.clone();
        let key = key.to_string();
        async move {
            redis::cmd("LLEN")
                .arg(&key)
                .query_async::<i64>(&mut c)
                .await
                .is_ok_and(|n| n == 3)
        }
    })
    .await;
    let before_dumps = (dumps(&mut m, prefix).await, dumps(&mut r, prefix).await);
    let master_before = command_calls(&mut m).await;
    let replica_before = command_calls(&mut r).await;

    let config = format!(
        "{}  - {{name: bee, source: jobs, measure: length, redis: {{library: bee-queue, queue: \"*\", prefix: \"{bee}\"}}}}\n",
        set.config(&key, "replica")
    );
    let adapter = Adapter::start(&config).await;
    adapter
        .wait_for("depth", None, Duration::from_secs(15), value_is(3.0))
        .await;
    let (_, body) = adapter
        .wait_for("bee", None, Duration::from_secs(15), value_is(2.0))
        .await;
    assert_eq!(body["items"][0]["metricLabels"]["queue"], "embed", "{body}");
    adapter.polls(5).await;
    let master_after = command_calls(&mut m).await;
    let replica_after = command_calls(&mut r).await;
    let calls =
        |map: &std::collections::BTreeMap<String, u64>, c: &str| map.get(c).copied().unwrap_or(0);
    assert_eq!(
        calls(&master_before, "llen"),
        calls(&master_after, "llen"),
        "the master was read"
    );
    assert!(calls(&replica_after, "llen") >= calls(&replica_before, "llen") + 5);
    assert!(calls(&replica_after, "role") > calls(&replica_before, "role"));
    // Nothing the adapter (or anything else meanwhile) ran on either node writes.
    for (conn, before, after) in [
        (&mut m, &master_before, &master_after),
        (&mut r, &replica_before, &replica_after),
    ] {
        let ran = ran_between(before, after);
        let writes = write_commands(conn, &ran).await;
        assert!(
            writes.is_empty(),
            "write commands ran: {writes:?} (all: {ran:?})"
        );
    }
    assert_eq!(
        before_dumps,
        (dumps(&mut m, prefix).await, dumps(&mut r, prefix).await),
        "a key changed"
    );
    adapter.stop().await;
    // `discover` through the sentinels finds RQ's queue on the master, and writes a source
    // that reaches it the same way.
    let found =
        queue_metrics_adapter::discover::run(&queue_metrics_adapter::cli::discover::DiscoverArgs {
            redis_sentinel: vec![format!("{MASTER}@{}", addresses.join(","))],
            ..Default::default()
        })
        .await
        .expect("discover");
    assert!(
        found.config.contains("library: rq, queue: \"rerank\"")
            && found.config.contains("sentinel: {master_name:"),
        "{}",
        found.config
    );
    assert!(
        found.summary.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.get(1) == Some(&"rq")
                && cells.get(3) == Some(&"rerank")
                && cells.get(4) == Some(&"2")
        }),
        "{}",
        found.summary
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sentinel_is_passed_over_and_every_poll_answers() {
    let mut set = Set::start().await;
    let key = "qma-test:sentinel-hung:jobs";
    let master = set.master_port().await.expect("a master");
    let mut m = set.node(master).conn().await;
    for i in 0..4 {
        cmd::<i64>(&mut m, &["LPUSH", key, &format!("job-{i}")]).await;
    }
    // The first sentinel, asked first, hangs from the start: the next one answers.
    set.sentinels[0].stop();
    let adapter = Adapter::start(&set.config(key, "master")).await;
    adapter
        .wait_for("depth", None, Duration::from_secs(15), value_is(4.0))
        .await;
    let (seen, reader, stop) = read_continuously(&adapter);
    adapter.polls(3).await;
    // The sentinel that answered, asked again at every poll, hangs too: the last one answers.
    set.sentinels[1].stop();
    adapter.polls(10).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.expect("reader");
    let seen = seen.lock().unwrap().clone();
    let wrong: Vec<_> = seen.iter().filter(|a| **a != (200, Some(4.0))).collect();
    assert!(
        wrong.is_empty(),
        "with sentinels hung: {wrong:?} of {}",
        seen.len()
    );
    let (status, body) = adapter.metric("depth", None).await;
    assert_eq!(status, 200, "{body}");
    adapter.stop().await;
}
