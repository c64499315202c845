//! A poll of 10,000 Redis lists spread over a three-primary Redis Cluster (length and oldest
//! age of each: 20,000 series), against a baseline measured in the same run: the same read
//! commands split by hash slot and sent raw as one pipeline per node, the three at once, replies
//! left unparsed; so the baseline is the slowest node's round trip. The cluster is private:
//! three `redis-server --cluster-enabled yes` on free loopback ports, started and stopped here.
//!
//! `make bench` (or `cargo bench --bench cluster`); results in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use queue_metrics_adapter::config::Config;
use queue_metrics_adapter::sources::Source;
use queue_metrics_adapter::sources::redis::cluster::slot;
use queue_metrics_adapter::sources::redis::{Redis, RedisSource};

const QUEUES: usize = 10_000;

/// Three cluster primaries, killed and their directories removed when dropped.
struct Primaries {
    ports: Vec<u16>,
    children: Vec<Child>,
    dirs: Vec<PathBuf>,
}

impl Drop for Primaries {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

fn start() -> Primaries {
    let mut p = Primaries {
        ports: Vec::new(),
        children: Vec::new(),
        dirs: Vec::new(),
    };
    for _ in 0..3 {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("qma-bench-cluster-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--cluster-enabled", "yes", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (make bench installs it)");
        p.ports.push(port);
        p.children.push(child);
        p.dirs.push(dir);
    }
    for port in &p.ports {
        let mut up = false;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(up, "redis-server on {port} did not start");
    }
    let addrs: Vec<String> = p
        .ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    p
}

async fn conn(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Slot → port, from `CLUSTER SLOTS`, once every node agrees the cluster is up.
async fn slot_owners(ports: &[u16]) -> Vec<u16> {
    for port in ports {
        let mut c = conn(*port).await;
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .expect("info");
            if info.contains("cluster_state:ok") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut c = conn(ports[0]).await;
    let map: Vec<(i64, i64, (String, i64))> = {
        let v: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut c)
            .await
            .expect("slots");
        v.into_iter()
            .map(|r| {
                let redis::Value::Array(f) = r else {
                    panic!("range")
                };
                let int = |v: &redis::Value| match v {
                    redis::Value::Int(n) => *n,
                    _ => panic!("int"),
                };
                let redis::Value::Array(p) = &f[2] else {
                    panic!("primary")
                };
                (int(&f[0]), int(&f[1]), (String::new(), int(&p[1])))
            })
            .collect()
    };
    let mut owners = vec![0u16; 16384];
    for (a, b, (_, port)) in map {
        for s in a..=b {
            owners[s as usize] = port as u16;
        }
    }
    owners
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = start();
    let owners = rt.block_on(slot_owners(&cluster.ports));
    let keys: Vec<String> = (0..QUEUES).map(|i| format!("queue:{i:05}")).collect();
    let mut per_node: BTreeMap<u16, Vec<&String>> = BTreeMap::new();
    for k in &keys {
        per_node
            .entry(owners[usize::from(slot(k.as_bytes()))])
            .or_default()
            .push(k);
    }
    assert_eq!(per_node.len(), 3, "keys on every primary");
    rt.block_on(async {
        let (secs, _): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut conn(cluster.ports[0]).await)
            .await
            .expect("TIME");
        for (port, keys) in &per_node {
            let mut p = redis::pipe();
            for k in keys {
                for j in 0..3 {
                    let job = format!(
                        r#"{{"class":"EmbedJob","args":[{j}],"enqueued_at":{}}}"#,
                        (secs - 60 + j) * 1000
                    );
                    p.cmd("LPUSH").arg(*k).arg(job).ignore();
                }
            }
            let () = p.query_async(&mut conn(*port).await).await.expect("load");
        }
    });

    let yaml = format!(
        "discovery_interval: 1h\npoll_timeout: 30s\nsources:\n  jobs:\n    redis: {{cluster: {{nodes: [\"127.0.0.1:{}\"]}}}}\nmetrics:\n  - {{name: len, source: jobs, measure: length, redis: {{type: list, pattern: \"queue:*\"}}}}\n  - {{name: age, source: jobs, measure: oldest_age_seconds, redis: {{type: list, pattern: \"queue:*\", timestamp: {{json_pointer: /enqueued_at, unit: ms}}}}}}\n",
        cluster.ports[0]
    );
    let config = Config::from_yaml(&yaml, Path::new("bench.yaml")).expect("config");
    let spec = config.spec_of::<Redis>("jobs").expect("a redis source");
    let mut source = RedisSource::new(&spec, None).expect("source");
    let samples = rt.block_on(source.poll()).expect("poll");
    assert_eq!(samples.len(), 2 * QUEUES);
    assert!(
        samples.iter().all(|s| s.value.is_ok()),
        "every series has a value"
    );

    let mut raw = Vec::new();
    for (port, keys) in &per_node {
        let mut p = redis::pipe();
        p.cmd("TIME");
        for k in keys {
            p.cmd("LLEN").arg(*k);
            p.cmd("LINDEX").arg(*k).arg(-1);
        }
        raw.push((rt.block_on(conn(*port)), p));
    }

    let mut group = c.benchmark_group("cluster_poll_10000_queues_3_primaries");
    group.sample_size(30);
    group.bench_function("raw_pipeline_per_node_baseline", |b| {
        b.iter(|| {
            rt.block_on(futures_util::future::join_all(raw.iter_mut().map(
                |(c, p)| async move {
                    let v: Vec<redis::Value> = p.query_async(c).await.expect("pipeline");
                    v
                },
            )))
        });
    });
    group.bench_function("adapter_poll", |b| {
        b.iter(|| rt.block_on(source.poll()).expect("poll"));
    });
    group.finish();
    drop(cluster);
}

criterion_group!(benches, bench);
criterion_main!(benches);
