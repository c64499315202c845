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
        let vhost = super::prefix(name).trim_end_matches(':').replace(':', "-");
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
