//! Private `nats-server` processes for the NATS tests: each on a free port under its own scratch
//! directory (config, JetStream store, log, PEM files), killed and removed when dropped; and the
//! server configurations the tests need (TLS with client certificates, an NKey user, a second
//! account reaching JetStream through an API prefix, a read-only user).
//!
//! `make test` installs `nats-server` (scripts/ensure-nats.sh with QMA_NEED_NATS_SERVER=1).
//! Written against nats-server 2.9.10 (Debian bookworm's); see the notes on each configuration.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh, empty scratch directory, `<tmp>/qma-nats-test-<pid>-<n>-<name>`, for files a
/// configuration refers to (PEM files) before its server starts: hand it to
/// [`PrivateNats::start_in`], which removes it with the server.
pub fn scratch_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "qma-nats-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("nats scratch dir");
    dir
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

/// One private `nats-server`, started from a configuration file in its scratch directory.
#[derive(Debug)]
pub struct PrivateNats {
    pub port: u16,
    /// Its scratch directory: `nats.conf`, `nats.log`, the JetStream store in `js/` (unless the
    /// configuration names its own), and whatever the test put there; removed on drop.
    pub dir: PathBuf,
    child: Option<Child>,
    /// The configuration as written, with the port, host and JetStream block added.
    config_text: String,
}

impl PrivateNats {
    /// Starts a server on a free port in a fresh scratch directory with `config` (nats-server
    /// configuration syntax) and waits until it answers.
    pub fn start(config: &str) -> PrivateNats {
        Self::start_in(scratch_dir("server"), config)
    }

    /// Like [`PrivateNats::start`], in `dir` (from [`scratch_dir`], holding files `config`
    /// names), which the server then owns and removes on drop.
    ///
    /// The helper appends `port`, `host: 127.0.0.1`, and `jetstream { store_dir: "<dir>/js" }`
    /// unless `config` has a top-level `jetstream` line of its own (one starting at column 0:
    /// `jetstream: disabled` gives a server without JetStream; an account's indented
    /// `jetstream: enabled` does not count).
    pub fn start_in(dir: PathBuf, config: &str) -> PrivateNats {
        Self::start_at(dir, config, free_port())
    }

    /// Like [`PrivateNats::start_in`], on `port` (for a cluster, whose ports are all chosen up
    /// front: see [`PrivateCluster`]).
    pub fn start_at(dir: PathBuf, config: &str, port: u16) -> PrivateNats {
        std::fs::create_dir_all(&dir).expect("nats scratch dir");
        let mut text = config.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("\nport: {port}\nhost: 127.0.0.1\n"));
        if !text.lines().any(|l| l.starts_with("jetstream")) {
            text.push_str(&format!(
                "jetstream {{\n  store_dir: \"{}\"\n}}\n",
                dir.join("js").display()
            ));
        }
        std::fs::write(dir.join("nats.conf"), &text).expect("write nats.conf");
        let mut server = PrivateNats {
            port,
            dir,
            child: None,
            config_text: text,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = self.log_path();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("nats log file");
        let err = out.try_clone().expect("nats log file");
        // Output before `-l` takes effect (a configuration that does not parse) goes to the same
        // file; the server appends to it as well.
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("nats-server is installed (make test installs it: scripts/ensure-nats.sh)");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.info().is_some() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "nats-server on port {} exited ({status}) without answering; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                self.stop();
                panic!(
                    "nats-server on port {} did not answer within {START_TIMEOUT:?}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The INFO line the server sends on connect (before any TLS), if it answers.
    pub fn info(&self) -> Option<String> {
        let stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1))
                .ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        line.starts_with("INFO ").then_some(line)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The configuration file's text: the test's, with the port, host and JetStream added.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("nats.log")
    }

    /// The server's log so far (its start-up errors included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server (SIGKILL: no goodbye to clients, as a crash) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server and starts it again on the same port with the same configuration and
    /// JetStream store (streams, consumers and messages survive), waiting until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A JetStream cluster of private `nats-server`s named `n0`, `n1`, … on 127.0.0.1, each
/// routing to the others, keeping its store in its own scratch directory, and serving
/// monitoring (`/connz`) on a port of its own; killed and removed when dropped.
///
/// Every port (client, cluster, monitoring) is chosen before the first server starts, all held
/// at once so that none is chosen twice: a server's routes name the others' cluster ports
/// before those servers run. The cluster has no JetStream meta leader yet when `start` returns
/// (nats-server 2.9 elects one a few seconds after the routes connect): a first JetStream
/// request may time out or answer "JetStream system temporarily unavailable", so retry it.
#[derive(Debug)]
pub struct PrivateCluster {
    /// The servers, `servers[i]` named `n<i>`.
    pub servers: Vec<PrivateNats>,
    http_ports: Vec<u16>,
}

impl PrivateCluster {
    /// Starts `n` servers forming one cluster, each waited for until it answers clients.
    pub fn start(n: usize) -> PrivateCluster {
        let held: Vec<StdListener> = (0..3 * n)
            .map(|_| StdListener::bind("127.0.0.1:0").expect("free port"))
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        drop(held);
        let (client, rest) = ports.split_at(n);
        let (cluster, http) = rest.split_at(n);
        let servers = (0..n)
            .map(|i| {
                let dir = scratch_dir(&format!("cluster-n{i}"));
                let routes: Vec<u16> = (0..n).filter(|&j| j != i).map(|j| cluster[j]).collect();
                let config = cluster_config(&format!("n{i}"), &dir, cluster[i], &routes, http[i]);
                PrivateNats::start_at(dir, &config, client[i])
            })
            .collect();
        PrivateCluster {
            servers,
            http_ports: http.to_vec(),
        }
    }

    /// Every server's `nats://127.0.0.1:<port>`.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(PrivateNats::url).collect()
    }

    /// The index of the server named `name` (`n<i>`).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        name.strip_prefix('n')
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|&i| i < self.servers.len())
    }

    /// The index of the server a client named `client_name` is connected to, as the servers'
    /// `/connz` tell (a stopped server tells nothing).
    pub async fn connected_to(&self, client_name: &str) -> Option<usize> {
        queue_metrics_adapter::tls::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        for (i, port) in self.http_ports.iter().enumerate() {
            let Ok(reply) = http
                .get(format!("http://127.0.0.1:{port}/connz?limit=1024"))
                .send()
                .await
            else {
                continue;
            };
            let Ok(connz) = reply.json::<serde_json::Value>().await else {
                continue;
            };
            let here = connz["connections"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == client_name));
            if here {
                return Some(i);
            }
        }
        None
    }
}

/// The configuration of cluster member `name`: its JetStream store in `dir/js`, its cluster
/// listen on `cluster_port`, routes to the other members' cluster ports, and monitoring on
/// `http_port`. Its top-level `jetstream` block keeps [`PrivateNats::start_in`] from adding one.
pub fn cluster_config(
    name: &str,
    dir: &Path,
    cluster_port: u16,
    routes: &[u16],
    http_port: u16,
) -> String {
    let routes: String = routes
        .iter()
        .map(|p| format!("    nats-route://127.0.0.1:{p}\n"))
        .collect();
    format!(
        "server_name: {name}\nhttp: 127.0.0.1:{http_port}\njetstream {{\n  store_dir: \"{}\"\n}}\ncluster {{\n  name: qma-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [\n{routes}  ]\n}}\n",
        dir.join("js").display()
    )
}

/// Like [`js_api`], waiting at most `timeout` and giving `None` for no reply (nobody answered
/// in time: a clustered stream or the meta group electing a leader) or one that is not JSON.
pub async fn try_js_api(
    client: &async_nats::Client,
    subject: &str,
    body: &str,
    timeout: Duration,
) -> Option<serde_json::Value> {
    let request = async_nats::Request::new()
        .payload(body.to_string().into())
        .timeout(Some(timeout));
    let reply = client
        .send_request(subject.to_string(), request)
        .await
        .ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

/// One JetStream API request (`subject` may carry an account's API prefix), its JSON reply
/// parsed; panics on no reply within 5 s (a refused publish gets none: see
/// [`read_only_user_config`]) or a reply that is not JSON.
pub async fn js_api(client: &async_nats::Client, subject: &str, body: &str) -> serde_json::Value {
    let request = async_nats::Request::new()
        .payload(body.to_string().into())
        .timeout(Some(Duration::from_secs(5)));
    let reply = client
        .send_request(subject.to_string(), request)
        .await
        .unwrap_or_else(|e| panic!("{subject} {body}: {e}"));
    serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
        panic!(
            "{subject} {body}: {e}: {}",
            String::from_utf8_lossy(&reply.payload)
        )
    })
}

/// A TLS configuration requiring client certificates (`verify: true`), with a fresh CA, a
/// server certificate for 127.0.0.1 and localhost, and a client certificate (common name
/// `qma-test-client`), written into `dir` as PEM files: (configuration text, CA, client
/// certificate, client key).
pub fn tls_config(dir: &Path) -> (String, PathBuf, PathBuf, PathBuf) {
    let ca = super::pki::ca("qma-test-nats-ca");
    let (server_cert, server_key) = super::pki::leaf(&ca, &["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = super::pki::valid_client(&ca, "qma-test-client");
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    let ca_path = write("ca.pem", &ca.pem());
    let server_cert = write("server.pem", &server_cert);
    let server_key = write("server-key.pem", &server_key);
    let client_cert = write("client.pem", &client_cert);
    let client_key = write("client-key.pem", &client_key);
    let config = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}\n",
        server_cert.display(),
        server_key.display(),
        ca_path.display()
    );
    (config, ca_path, client_cert, client_key)
}

/// A fresh NKey user: (seed `SU...`, public key `U...`). The encoding is NATS's (base32 of a
/// prefix byte, the raw Ed25519 key and a CRC-16/XMODEM), made here with `ring` so the tests
/// need no `nkeys` dependency of their own; async-nats decodes the seed with `nkeys` 0.4.5.
pub fn nkey_user() -> (String, String) {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .expect("random seed");
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).expect("ed25519 seed");
    let public = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    const PREFIX_SEED: u8 = 18 << 3;
    const PREFIX_USER: u8 = 20 << 3;
    let seed_text = nkey_encode(
        &[PREFIX_SEED | PREFIX_USER >> 5, (PREFIX_USER & 31) << 3],
        &seed,
    );
    let public_text = nkey_encode(&[PREFIX_USER], &public);
    (seed_text, public_text)
}

/// `users: [{ nkey: <public> }]`: the only way in is the NKey (sign the server's nonce).
pub fn nkey_config(public: &str) -> String {
    format!("authorization {{\n  users: [\n    {{ nkey: \"{public}\" }}\n  ]\n}}\n")
}

fn nkey_encode(prefix: &[u8], key: &[u8]) -> String {
    let mut raw = prefix.to_vec();
    raw.extend_from_slice(key);
    let mut crc: u16 = 0;
    for &b in &raw {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    raw.extend_from_slice(&crc.to_le_bytes());
    base32_nopad(&raw)
}

fn base32_nopad(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Two accounts: `A` (user `a`/`a`) has JetStream and exports its JetStream API; `B` (user
/// `b`/`b`) has none and imports A's API under the prefix `JS.A.API`, so a client in B asks
/// `JS.A.API.STREAM.INFO.<stream>` for A's streams (as `jetstream.api_prefix: JS.A.API`).
/// Replies come back to B's inbox through the service import. B sees none of A's stream
/// subjects: a wake subscription in B hears nothing of A's publishes.
pub fn account_prefix_config() -> String {
    r#"accounts {
  A: {
    jetstream: enabled
    users: [ { user: a, password: a } ]
    exports: [ { service: "$JS.API.>" } ]
  }
  B: {
    users: [ { user: b, password: b } ]
    imports: [ { service: { account: A, subject: "$JS.API.>" }, to: "JS.A.API.>" } ]
  }
}
"#
    .to_string()
}

/// The JetStream API subjects the adapter publishes to, exactly the four README's
/// `authorization` block grants: all it needs to read streams and consumers, nothing that
/// changes them, no direct get.
pub const READ_ONLY_PUBLISH: &[&str] = &[
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.API.CONSUMER.LIST.*",
];

/// Users `reader`/`reader-pass`, allowed to publish only to [`READ_ONLY_PUBLISH`] and to
/// subscribe only to `_INBOX.>` (its replies: no wake subscription to stream subjects), and
/// `admin`/`admin-pass` with every permission, for the tests' producers.
///
/// What a refusal looks like to async-nats 0.52 (nats-server 2.9.10), as tests/nats_harness.rs
/// shows: the connection stays up, and
/// - a refused publish, e.g. a request to `$JS.API.STREAM.CREATE.X`, gets no reply at all (the
///   request ends in `RequestErrorKind::TimedOut`, not `NoResponders`), and the server sends
///   `-ERR 'Permissions Violation for Publish to "$JS.API.STREAM.CREATE.X"'`;
/// - a refused subscription: `subscribe` returns `Ok`, the server sends
///   `-ERR 'Permissions Violation for Subscription to "jobs.>"'`, and the `Subscriber` never
///   yields nor ends; the client subscribes again after each reconnect and gets the error again.
///
/// Both reach `ConnectOptions::event_callback` as
/// `Event::ServerError(ServerError::Other(text))`, `text` without the quotes around it.
pub fn read_only_user_config() -> String {
    let publish = READ_ONLY_PUBLISH
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"authorization {{
  users: [
    {{ user: admin, password: admin-pass }}
    {{
      user: reader
      password: reader-pass
      permissions: {{
        publish: {{ allow: [{publish}] }}
        subscribe: {{ allow: ["_INBOX.>"] }}
      }}
    }}
  ]
}}
"#
    )
}

/// Waits (up to 15 s) until `metric` answers an error whose text holds `needle`, and returns
/// that answer.
pub async fn error_of(a: &super::Adapter, metric: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let got = super::paced::served(a, metric).await;
        if let Err(e) = &got
            && e.contains(needle)
        {
            return e.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{metric}: {got:?}, wanted an error with {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a worker of pull consumer `consumer` takes and holds without acknowledging: up to `n`
/// messages of one fetch.
pub async fn take(
    consumer: &async_nats::jetstream::consumer::Consumer<
        async_nats::jetstream::consumer::pull::Config,
    >,
    n: usize,
) -> Vec<async_nats::jetstream::Message> {
    use futures_util::StreamExt as _;
    let mut batch = consumer
        .fetch()
        .max_messages(n)
        .messages()
        .await
        .expect("fetch");
    let mut held = Vec::new();
    while let Some(m) = batch.next().await {
        held.push(m.expect("message"));
    }
    held
}
