//! The set-up scripts `make run` and `make test` start with, on the paths CI's machine never
//! takes: Redis and RabbitMQ installed but stopped (a fresh machine after boot), and a service
//! that does not come up, which must end in a bounded time with a message saying where to look.
//! Each runs the real script against a private instance on free ports and stops it after. The
//! job libraries' installer is run where its interpreters are missing.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

fn run(script: &str, env: &[(&str, String)]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new("bash")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scripts")
                .join(script),
        )
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("bash runs");
    (out, start.elapsed())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ensure_redis_starts_a_stopped_server_and_gives_up_on_a_port_that_never_answers() {
    let port = free_port();
    let env = [("REDIS_PORT", port.to_string())];
    let (out, _) = run("ensure-redis.sh", &env);
    let said = text(&out);
    let up = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    // Stop it before asserting, so a failure leaves nothing running.
    let _ = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "shutdown", "nosave"])
        .output();
    let _ = std::fs::remove_dir_all(format!("/tmp/qma-redis-{port}"));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("starting redis-server"), "{said}");
    assert_eq!(up.expect("the started Redis answers"), "PONG");

    // Something else holds the port and never answers: a clear error, in bounded time.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let held = squatter.local_addr().expect("addr").port();
    let (out, took) = run(
        "ensure-redis.sh",
        &[
            ("REDIS_PORT", held.to_string()),
            ("QMA_REDIS_START_TIMEOUT", "2".into()),
        ],
    );
    let said = text(&out);
    let _ = std::fs::remove_dir_all(format!("/tmp/qma-redis-{held}"));
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("127.0.0.1:{held}")) && said.contains("redis.log"),
        "the message names the address and the log: {said}"
    );
    assert!(took < Duration::from_secs(30), "bounded: {took:?}");
}

/// A private node's directory, as the rabbitmq user's, with the management plugin off.
struct NodeDir {
    name: String,
    dir: std::path::PathBuf,
}

impl NodeDir {
    fn new(conf: &str) -> NodeDir {
        let name = format!("qmaensure{}x{}@localhost", std::process::id(), free_port());
        let dir = std::env::temp_dir().join(format!("qma-ensure-{}", name.replace('@', "-")));
        std::fs::create_dir_all(dir.join("mnesia")).expect("dir");
        std::fs::create_dir_all(dir.join("log")).expect("dir");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins");
        std::fs::write(dir.join("rabbitmq.conf"), conf).expect("conf");
        let chown = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(chown.success());
        NodeDir { name, dir }
    }

    fn env(&self, amqp: u16, management: u16) -> Vec<(&'static str, String)> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        vec![
            ("RABBITMQ_NODENAME", self.name.clone()),
            ("RABBITMQ_NODE_PORT", amqp.to_string()),
            ("RABBITMQ_DIST_PORT", free_port().to_string()),
            ("RABBITMQ_MNESIA_BASE", d("mnesia")),
            ("RABBITMQ_LOG_BASE", d("log")),
            ("RABBITMQ_CONFIG_FILE", d("rabbitmq")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
            ("QMA_RABBITMQ_MANAGEMENT_PORT", management.to_string()),
        ]
    }
}

impl Drop for NodeDir {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.name, "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn ensure_rabbitmq_boots_a_stopped_node_with_its_management_api_and_times_out_with_a_message() {
    let (amqp, management) = (free_port(), free_port());
    let node = NodeDir::new(&format!(
        "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {management}\n"
    ));
    let env = node.env(amqp, management);
    let (out, took) = run("ensure-rabbitmq.sh", &env);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("starting rabbitmq-server"), "{said}");
    let overview = Command::new("curl")
        .args(["-sf", "-u", "guest:guest"])
        .arg(format!("http://127.0.0.1:{management}/api/overview"))
        .output()
        .expect("curl");
    assert!(
        overview.status.success(),
        "the management API answers after the script: {said}"
    );
    eprintln!("stopped node booted by the script in {took:?}");
    // Run again: nothing to do, and it says so.
    let (again, _) = run("ensure-rabbitmq.sh", &env);
    let said = text(&again);
    assert!(
        again.status.success() && said.contains("already running"),
        "{said}"
    );
    drop(node);

    // A node that cannot boot (its config does not parse): bounded, and the log is named.
    let broken = NodeDir::new("this line = is = not a rabbitmq.conf setting\n");
    let mut env = broken.env(free_port(), free_port());
    env.push(("QMA_RABBITMQ_BOOT_TIMEOUT", "8".into()));
    let (out, took) = run("ensure-rabbitmq.sh", &env);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("its log is in") && said.contains(&broken.dir.display().to_string()),
        "{said}"
    );
    assert!(took < Duration::from_secs(60), "bounded: {took:?}");
}

/// `ensure-job-libraries.sh` with `PATH` holding only the shell tools it uses, into an empty
/// folder: each part says what is missing and fails, and an unknown part is refused by name.
#[test]
fn ensure_job_libraries_says_what_is_missing_and_refuses_an_unknown_part() {
    let dir = std::env::temp_dir().join(format!("qma-ensure-jl-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("temp bin");
    for tool in ["dirname", "mkdir", "cat", "tr", "rm", "id"] {
        let found = Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .expect("bash");
        let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
        std::os::unix::fs::symlink(&path, bin.join(tool)).expect("link a tool");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-job-libraries.sh");
    let run_part = |part: &str| {
        Command::new("/bin/bash")
            .arg(&script)
            .arg(part)
            .env_clear()
            .env("PATH", &bin)
            .env("QMA_JOB_LIBRARIES_DIR", dir.join("libraries"))
            .output()
            .expect("bash runs")
    };
    let python = run_part("python");
    let node = run_part("node");
    let unknown = run_part("perl");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(python.status.code(), Some(1), "{}", text(&python));
    assert!(
        text(&python).contains("python3 is missing"),
        "{}",
        text(&python)
    );
    assert_eq!(node.status.code(), Some(1), "{}", text(&node));
    assert!(text(&node).contains("npm is missing"), "{}", text(&node));
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("unknown part perl"),
        "{}",
        text(&unknown)
    );
}
