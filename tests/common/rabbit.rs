//! RabbitMQ test helpers: a vhost per test (created and deleted through the management API),
//! publishing with or without the AMQP timestamp property, and a consumer that holds messages
//! unacknowledged. Tests talk to the real broker on 127.0.0.1 (5672, management 15672) as
//! guest/guest; `make test` starts it and enables the management plugin.

use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

/// The management API the tests use.
pub const MANAGEMENT: &str = "http://127.0.0.1:15672";

/// A vhost that exists for the life of this value and is deleted (with its queues) after.
pub struct TestVhost {
    pub name: String,
}

impl TestVhost {
    /// Creates `qma-test-<name>-<pid>-<n>` and gives guest full permissions on it.
    pub async fn new(name: &str) -> TestVhost {
        Self::named(super::prefix(name).trim_end_matches(':').replace(':', "-")).await
    }

    /// Creates the vhost `vhost` exactly as given (any characters RabbitMQ takes) and gives
    /// guest full permissions on it.
    pub async fn named(vhost: String) -> TestVhost {
        let http = super::http_client();
        let enc = encode(&vhost);
        let r = http
            .put(format!("{MANAGEMENT}/api/vhosts/{enc}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "RabbitMQ management API unreachable ({e}); run `make test`, which starts it"
                )
            });
        assert!(
            r.status().is_success(),
            "creating vhost {vhost}: {}",
            r.status()
        );
        let r = http
            .put(format!("{MANAGEMENT}/api/permissions/{enc}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .expect("permissions");
        assert!(
            r.status().is_success(),
            "permissions on {vhost}: {}",
            r.status()
        );
        TestVhost { name: vhost }
    }

    /// An AMQP connection to this vhost.
    pub async fn connect(&self) -> Connection {
        let uri = format!("amqp://guest:guest@127.0.0.1:5672/{}", encode(&self.name));
        Connection::connect(&uri, ConnectionProperties::default())
            .await
            .expect("AMQP connect")
    }

    /// Declares `queue` (`classic` or `quorum`) and publishes `bodies`, each with the AMQP
    /// timestamp `Some(epoch seconds)` or none; waits for the broker's confirms.
    pub async fn publish(
        &self,
        conn: &Connection,
        queue: &str,
        kind: &str,
        messages: &[(&str, Option<u64>)],
    ) -> Channel {
        let ch = conn.create_channel().await.expect("channel");
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        let durable = kind == "quorum";
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable,
                ..Default::default()
            },
            args,
        )
        .await
        .expect("declare");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        for (body, ts) in messages {
            let mut props = BasicProperties::default();
            if let Some(ts) = ts {
                props = props.with_timestamp(*ts);
            }
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        }
        ch
    }

    /// A consumer with prefetch `n` that receives (and holds, unacknowledged) up to `n` messages.
    pub async fn hold_unacked(
        &self,
        conn: &Connection,
        queue: &str,
        n: u16,
    ) -> (Channel, Consumer) {
        let ch = conn.create_channel().await.expect("channel");
        ch.basic_qos(n, BasicQosOptions::default())
            .await
            .expect("qos");
        let consumer = ch
            .basic_consume(
                queue.into(),
                "qma-test-holder".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        (ch, consumer)
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let url = format!("{MANAGEMENT}/api/vhosts/{}", encode(&self.name));
        super::on_own_runtime(async move {
            let _ = super::http_client()
                .delete(url)
                .basic_auth("guest", Some("guest"))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
        });
    }
}

/// Sets `QMA_TEST_RABBIT_PASSWORD` (guest's password), which the test configs read.
pub fn set_guest_password_env() {
    // SAFETY: every test sets the same value before any thread reads it; no test removes it.
    unsafe { std::env::set_var("QMA_TEST_RABBIT_PASSWORD", "guest") };
}

/// An adapter config with one RabbitMQ source (`management`, as guest) and `metrics` given as
/// `(name, measure, target)` in `vhost`; `target` is the rest of the `rabbitmq:` block.
pub fn config(management: &str, vhost: &str, metrics: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        "poll_interval: 250ms\npoll_timeout: 2s\nmax_backoff: 1s\nsources:\n  rabbit:\n    rabbitmq: {{management_url: \"{management}\", username: guest, password_env: QMA_TEST_RABBIT_PASSWORD}}\nmetrics:\n"
    );
    for (name, measure, target) in metrics {
        out.push_str(&format!("  - {{name: {name}, source: rabbit, measure: {measure}, rabbitmq: {{vhost: \"{vhost}\", {target}}}}}\n"));
    }
    out
}

/// Declares the durable queue `queue` at `amqp_url` and publishes `bodies` as persistent
/// messages, waiting for each confirm: data that survives a broker restart.
pub async fn publish_persistent(amqp_url: &str, queue: &str, bodies: &[&str]) {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    for body in bodies {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    }
    drop(ch);
    let _ = conn.close(200, "done".into()).await;
}

/// Percent-encodes a vhost for URLs.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Seconds since the epoch on this machine (the broker runs here too).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A private RabbitMQ node (its own name, ports and data directory, owned by the `rabbitmq`
/// user that Debian's wrapper runs it as), for tests that stop the broker without disturbing the
/// shared one.
pub struct RabbitNode {
    pub name: String,
    pub amqp_port: u16,
    pub management_port: u16,
    /// A free port the extra configuration may use (for `listeners.ssl.default`).
    pub tls_port: u16,
    management_tls: bool,
    dist_port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

impl RabbitNode {
    /// Boots a node with the management plugin and waits (up to 90 s) for its API.
    pub async fn start() -> RabbitNode {
        Self::start_with(|_, _| (String::new(), false)).await
    }

    /// Like [`RabbitNode::start`], with extra `rabbitmq.conf` lines made from the node's directory
    /// and a fresh free port; `true` if the management API is served over TLS on that port.
    pub async fn start_with(
        extra: impl FnOnce(&std::path::Path, u16) -> (String, bool),
    ) -> RabbitNode {
        let name = format!("qmatest{}x{}@localhost", std::process::id(), free_port());
        let dir = std::env::temp_dir().join(format!("qma-rabbit-{}", name.replace('@', "-")));
        std::fs::create_dir_all(dir.join("mnesia")).expect("dir");
        std::fs::create_dir_all(dir.join("log")).expect("dir");
        let (amqp_port, management_port, dist_port) = (free_port(), free_port(), free_port());
        let tls_port = free_port();
        let (extra_conf, management_tls) = extra(&dir, tls_port);
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].\n").expect("plugins");
        let management = if management_tls {
            format!("management.ssl.ip = 127.0.0.1\nmanagement.ssl.port = {management_port}\n")
        } else {
            format!("management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {management_port}\n")
        };
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{amqp_port}\n{management}{extra_conf}"),
        )
        .expect("conf");
        let status = std::process::Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(
            status.success(),
            "chown of the node's directory to rabbitmq"
        );
        let mut node = RabbitNode {
            name,
            amqp_port,
            management_port,
            tls_port,
            management_tls,
            dist_port,
            dir,
            child: None,
        };
        node.boot().await;
        node
    }

    /// Starts the node (again) and waits for its management API.
    pub async fn boot(&mut self) {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let child = std::process::Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rabbitmq-server is installed (make test installs it)");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(90) {
            if self.management_tls {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.management_port))
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            let ok = reqwest::Client::new()
                .get(format!("{}/api/overview", self.management_url()))
                .basic_auth("guest", Some("guest"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "private RabbitMQ node {} did not boot in 90 s (logs in {})",
            self.name,
            self.dir.display()
        );
    }

    /// Stops the node and waits until its ports are closed.
    pub async fn stop(&mut self) {
        self.halt();
        for _ in 0..120 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.management_port))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn management_url(&self) -> String {
        // Over TLS the name must match the certificate (localhost); plain HTTP uses the address.
        if self.management_tls {
            format!("https://localhost:{}", self.management_port)
        } else {
            format!("http://127.0.0.1:{}", self.management_port)
        }
    }

    /// Stops the node (`rabbitmqctl stop`, then the process) without waiting for its ports.
    fn halt(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-n", &self.name, "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The node's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.halt();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An AMQP 0-9-1 consumer in automatic-acknowledgement mode (`no_ack`) that reads its socket
/// slowly, as a busy worker does: RabbitMQ then keeps a backlog in the queue (it holds at most
/// a few hundred unsent messages per channel) while messages leave at the worker's pace, and
/// never sees an acknowledgement. Written on the raw protocol because client libraries read
/// their socket as fast as it fills. Reading stops when this value is dropped.
pub struct SlowAutoAckConsumer {
    reader: tokio::task::JoinHandle<()>,
}

impl SlowAutoAckConsumer {
    /// Consumes `queue` in `vhost` as guest, reading `bytes` from the socket every `every`.
    pub async fn start(vhost: &str, queue: &str, bytes: usize, every: Duration) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        // A small receive window, so the broker cannot push far ahead of the reads.
        socket.set_recv_buffer_size(8192).expect("rcvbuf");
        let mut s = socket
            .connect("127.0.0.1:5672".parse().expect("addr"))
            .await
            .expect("AMQP connect");
        s.write_all(b"AMQP\x00\x00\x09\x01").await.expect("header");
        expect_method(&mut s, 10, 10).await; // connection.start
        let mut start_ok = method(10, 11);
        start_ok.extend_from_slice(&0u32.to_be_bytes()); // client-properties: empty table
        short_str(&mut start_ok, "PLAIN");
        long_str(&mut start_ok, b"\0guest\0guest");
        short_str(&mut start_ok, "en_US");
        send_frame(&mut s, 0, &start_ok).await;
        expect_method(&mut s, 10, 30).await; // connection.tune
        let mut tune_ok = method(10, 31);
        tune_ok.extend_from_slice(&1u16.to_be_bytes()); // channel-max
        tune_ok.extend_from_slice(&131_072u32.to_be_bytes()); // frame-max
        tune_ok.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
        send_frame(&mut s, 0, &tune_ok).await;
        let mut open = method(10, 40);
        short_str(&mut open, vhost);
        short_str(&mut open, "");
        open.push(0);
        send_frame(&mut s, 0, &open).await;
        expect_method(&mut s, 10, 41).await; // connection.open-ok
        let mut channel_open = method(20, 10);
        short_str(&mut channel_open, "");
        send_frame(&mut s, 1, &channel_open).await;
        expect_method(&mut s, 20, 11).await; // channel.open-ok
        let mut consume = method(60, 20);
        consume.extend_from_slice(&0u16.to_be_bytes()); // reserved
        short_str(&mut consume, queue);
        short_str(&mut consume, "qma-test-slow-auto-ack");
        consume.push(0b0000_0010); // no-ack
        consume.extend_from_slice(&0u32.to_be_bytes()); // arguments: empty table
        send_frame(&mut s, 1, &consume).await;
        expect_method(&mut s, 60, 21).await; // basic.consume-ok
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; bytes];
            loop {
                tokio::time::sleep(every).await;
                let mut got = 0;
                while got < bytes {
                    match s.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
            }
        });
        SlowAutoAckConsumer { reader }
    }
}

impl Drop for SlowAutoAckConsumer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn method(class: u16, method: u16) -> Vec<u8> {
    let mut v = class.to_be_bytes().to_vec();
    v.extend_from_slice(&method.to_be_bytes());
    v
}

fn short_str(out: &mut Vec<u8>, s: &str) {
    out.push(u8::try_from(s.len()).expect("short string"));
    out.extend_from_slice(s.as_bytes());
}

fn long_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).expect("long string").to_be_bytes());
    out.extend_from_slice(s);
}

async fn send_frame(s: &mut tokio::net::TcpStream, channel: u16, payload: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let mut frame = vec![1u8]; // method frame
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("size").to_be_bytes());
    frame.extend_from_slice(payload);
    frame.push(0xCE);
    s.write_all(&frame).await.expect("send frame");
}

/// Reads one frame and checks that it is the method `class.method`.
async fn expect_method(s: &mut tokio::net::TcpStream, class: u16, method: u16) {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("broker answers within 10 s")
        .expect("frame header");
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    s.read_exact(&mut payload).await.expect("frame payload");
    let got = (
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    );
    assert_eq!(
        (head[0], got),
        (1, (class, method)),
        "expected method {class}.{method}, got frame type {} method {got:?}",
        head[0]
    );
}
