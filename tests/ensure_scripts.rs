//! The set-up scripts `make run` and `make test` start with, on the paths CI's machine never
//! takes: Redis, RabbitMQ and NATS installed but stopped (a fresh machine after boot), and a
//! service that does not come up, which must end in a bounded time with a message saying where
//! to look.
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

/// The INFO line a NATS server on `port` sends first, or what went wrong reading it.
fn nats_info(port: u16) -> Result<String, String> {
    use std::io::BufRead;
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line)
}

/// Kills the nats-server the script started on `port` (its pid file) and removes its directory.
fn stop_script_nats(port: u16) {
    let dir = format!("/tmp/qma-nats-{port}");
    if let Ok(pid) = std::fs::read_to_string(format!("{dir}/nats.pid")) {
        let _ = Command::new("kill").args(["-9", pid.trim()]).output();
    }
    // Its store may be written to until it is gone.
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ensure_nats_starts_a_stopped_server_with_jetstream_and_refuses_what_is_not_one() {
    let port = free_port();
    let env = [("NATS_PORT", port.to_string())];
    let (out, took) = run("ensure-nats.sh", &env);
    let said = text(&out);
    let info = nats_info(port);
    let (again, _) = run("ensure-nats.sh", &env);
    let said_again = text(&again);
    // Stop it before asserting, so a failure leaves nothing running.
    stop_script_nats(port);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("starting nats-server"), "{said}");
    let info = info.expect("the started server answers");
    assert!(
        info.starts_with("INFO ") && info.contains(r#""jetstream":true"#),
        "{info}"
    );
    eprintln!("stopped NATS started by the script in {took:?}");
    assert!(
        again.status.success() && said_again.contains("already running"),
        "{said_again}"
    );

    // A NATS server without JetStream holds the port: it says so and fails.
    let plain = free_port();
    let mut server = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &plain.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server is installed (make test installs it)");
    let start = Instant::now();
    while nats_info(plain).is_err() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (out, _) = run("ensure-nats.sh", &[("NATS_PORT", plain.to_string())]);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(format!("/tmp/qma-nats-{plain}"));
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("127.0.0.1:{plain}")) && said.contains("JetStream is off"),
        "{said}"
    );

    // Something else holds the port and never answers: a clear error, in bounded time.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let held = squatter.local_addr().expect("addr").port();
    let (out, took) = run(
        "ensure-nats.sh",
        &[
            ("NATS_PORT", held.to_string()),
            ("QMA_NATS_START_TIMEOUT", "2".into()),
        ],
    );
    let said = text(&out);
    let _ = std::fs::remove_dir_all(format!("/tmp/qma-nats-{held}"));
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("127.0.0.1:{held}")) && said.contains("no NATS INFO"),
        "the message names the address: {said}"
    );
    assert!(took < Duration::from_secs(30), "bounded: {took:?}");
    drop(squatter);
}

/// A `nats-server` that never answers (it hangs) or dies at once: the script gives up in
/// bounded time and names its log.
#[test]
fn ensure_nats_gives_up_on_a_server_that_never_answers_and_names_its_log() {
    let dir = std::env::temp_dir().join(format!("qma-ensure-nats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp bin");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let fake = |body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.join("nats-server");
        std::fs::write(
            &file,
            format!(
                "#!/bin/sh
{body}
"
            ),
        )
        .expect("fake nats-server");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    // Hangs for a little longer than the script waits, then goes away by itself.
    fake("exec sleep 4");
    let hung = free_port();
    let (out_hung, took_hung) = run(
        "ensure-nats.sh",
        &[
            ("NATS_PORT", hung.to_string()),
            ("QMA_NATS_START_TIMEOUT", "2".into()),
            ("PATH", path.clone()),
        ],
    );
    fake("echo 'fake nats-server: listen tcp: address already in use' >&2; exit 1");
    let died = free_port();
    let (out_died, took_died) = run(
        "ensure-nats.sh",
        &[("NATS_PORT", died.to_string()), ("PATH", path)],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(format!("/tmp/qma-nats-{hung}"));
    let _ = std::fs::remove_dir_all(format!("/tmp/qma-nats-{died}"));

    let said = text(&out_hung);
    assert!(!out_hung.status.success(), "{said}");
    assert!(
        said.contains(&format!("did not answer on 127.0.0.1:{hung} within 2s"))
            && said.contains(&format!("/tmp/qma-nats-{hung}/nats.log")),
        "the message names the address and the log: {said}"
    );
    assert!(
        took_hung < Duration::from_secs(30),
        "bounded: {took_hung:?}"
    );

    let said = text(&out_died);
    assert!(!out_died.status.success(), "{said}");
    assert!(
        said.contains("exited without answering")
            && said.contains(&format!("/tmp/qma-nats-{died}/nats.log"))
            && said.contains("address already in use"),
        "the message names the log and quotes it: {said}"
    );
    assert!(took_died < Duration::from_secs(5), "at once: {took_died:?}");
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
