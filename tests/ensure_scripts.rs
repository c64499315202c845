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

/// The newest PostgreSQL version with a Debian cluster `main` (what ensure-postgres.sh starts),
/// if this machine has one.
fn debian_postgres_version() -> Option<String> {
    // As the script picks it: the newest folder under /etc/postgresql.
    let mut versions: Vec<(Vec<u32>, String)> = std::fs::read_dir("/etc/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .map(|v| (v.split('.').filter_map(|n| n.parse().ok()).collect(), v))
        .collect();
    versions.sort();
    let newest = versions.pop()?.1;
    Path::new("/etc/postgresql")
        .join(&newest)
        .join("main")
        .is_dir()
        .then_some(newest)
}

/// The machine's PostgreSQL (started if stopped, never stopped), a port nothing answers on and
/// that Debian's cluster is not configured for, and a port some other program holds.
#[test]
fn ensure_postgres_says_a_running_server_runs_and_refuses_ports_it_cannot_start() {
    // Starts the machine's server if it is stopped (as `make test` does first), then says so.
    let (first, _) = run("ensure-postgres.sh", &[]);
    let (again, _) = run("ensure-postgres.sh", &[]);
    let said = text(&again);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        again.status.success()
            && said.contains("PostgreSQL is already running on 127.0.0.1:5432")
            && said.contains("user postgres logs in over TCP on 127.0.0.1:5432 without a password"),
        "{said}"
    );

    // Something else holds the port and never answers: a clear error, in bounded time.
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind");
    let held = squatter.local_addr().expect("addr").port();
    let (out, took) = run(
        "ensure-postgres.sh",
        &[
            ("QMA_POSTGRES_PORT", held.to_string()),
            ("QMA_POSTGRES_START_TIMEOUT", "2".into()),
        ],
    );
    drop(squatter);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("127.0.0.1:{held}"))
            && said.contains("does not answer as PostgreSQL"),
        "the message names the address: {said}"
    );
    assert!(took < Duration::from_secs(30), "bounded: {took:?}");

    // Nothing answers, and Debian's cluster is for another port: it says so and starts nothing.
    let Some(version) = debian_postgres_version() else {
        eprintln!("no Debian PostgreSQL cluster `main` here: the wrong-port case is not run");
        return;
    };
    let port = free_port();
    let (out, took) = run(
        "ensure-postgres.sh",
        &[("QMA_POSTGRES_PORT", port.to_string())],
    );
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("nothing answers on 127.0.0.1:{port}"))
            && said.contains(&format!("cluster {version}/main is configured for port"))
            && said.contains("QMA_POSTGRES_PORT="),
        "{said}"
    );
    assert!(took < Duration::from_secs(10), "at once: {took:?}");
}

/// A private Debian cluster (pg_createcluster), stopped; dropped (stopped first) at the end.
struct PrivateCluster {
    version: String,
    name: String,
    port: u16,
}

impl PrivateCluster {
    fn new(version: &str) -> PrivateCluster {
        let port = free_port();
        let name = format!("qmaensure{}x{port}", std::process::id());
        let created = Command::new("pg_createcluster")
            .args([version, &name, "-p", &port.to_string()])
            .output()
            .expect("pg_createcluster runs");
        assert!(created.status.success(), "{}", text(&created));
        PrivateCluster {
            version: version.into(),
            name,
            port,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("QMA_POSTGRES_PORT", self.port.to_string()),
            ("QMA_POSTGRES_CLUSTER", self.name.clone()),
        ]
    }

    fn hba(&self) -> String {
        format!("/etc/postgresql/{}/{}/pg_hba.conf", self.version, self.name)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .output();
    }
}

/// Debian's start path on a private cluster of the machine's version (never the machine's own):
/// a fresh cluster asks for a password over TCP (Debian's default pg_hba.conf), which the script
/// says how to change; with the trust line it logs in.
#[test]
fn ensure_postgres_starts_a_stopped_cluster_and_says_which_pg_hba_line_it_needs() {
    let Some(version) = debian_postgres_version() else {
        eprintln!("no Debian PostgreSQL cluster `main` here: the start path is not run");
        return;
    };
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        eprintln!("not root: pg_createcluster needs root, the start path is not run");
        return;
    }
    let cluster = PrivateCluster::new(&version);
    let env = cluster.env();
    let (out, took) = run("ensure-postgres.sh", &env);
    let said = text(&out);
    let port = cluster.port;
    assert!(
        said.contains("is installed but stopped: starting it")
            && said.contains(&format!("PostgreSQL {version} is up on 127.0.0.1:{port}")),
        "{said}"
    );
    eprintln!("stopped cluster started by the script in {took:?}");
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("asks user postgres for a password")
            && said.contains("host all all 127.0.0.1/32 trust")
            && said.contains(&cluster.hba()),
        "names the line and the file: {said}"
    );

    // What the message says to do; then it logs in.
    let hba = std::fs::read_to_string(cluster.hba()).expect("pg_hba.conf");
    std::fs::write(
        cluster.hba(),
        format!("host all all 127.0.0.1/32 trust\n{hba}"),
    )
    .expect("pg_hba.conf");
    let reload = Command::new("pg_ctlcluster")
        .args([&version, &cluster.name, "reload"])
        .output()
        .expect("pg_ctlcluster");
    assert!(reload.status.success(), "{}", text(&reload));
    let (again, _) = run("ensure-postgres.sh", &env);
    let said = text(&again);
    drop(cluster);
    assert!(
        again.status.success()
            && said.contains(&format!(
                "PostgreSQL is already running on 127.0.0.1:{port}"
            ))
            && said.contains("without a password"),
        "{said}"
    );
}

/// A `pg_ctlcluster` that hangs, or fails at once, for a cluster the fake `pg_lsclusters`
/// reports stopped on a free port: the script gives up in bounded time and names the log.
#[test]
fn ensure_postgres_gives_up_on_a_cluster_that_never_answers_and_names_its_log() {
    if debian_postgres_version().is_none() {
        eprintln!("no Debian PostgreSQL cluster `main` here: the fake start path is not run");
        return;
    }
    let dir = std::env::temp_dir().join(format!("qma-ensure-postgres-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp bin");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = dir.join("cluster.log");
    std::fs::write(&log, "FATAL:  the fake cluster's last words\n").expect("log");
    let fake = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.join(name);
        std::fs::write(&file, format!("#!/bin/sh\n{body}\n")).expect("fake");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    let port = free_port();
    fake(
        "pg_lsclusters",
        &format!(
            "echo \"${{1:-15}} main {port} down postgres /nonexistent {}\"",
            log.display()
        ),
    );
    // Hangs for a little longer than the script waits, then goes away by itself.
    fake("pg_ctlcluster", "exec sleep 4");
    let env = [
        ("QMA_POSTGRES_PORT", port.to_string()),
        ("QMA_POSTGRES_START_TIMEOUT", "2".into()),
        ("PATH", path.clone()),
    ];
    let (out_hung, took_hung) = run("ensure-postgres.sh", &env);
    fake(
        "pg_ctlcluster",
        "echo 'The PostgreSQL server failed to start. Please check the log output.' >&2; exit 1",
    );
    let (out_died, took_died) = run(
        "ensure-postgres.sh",
        &[("QMA_POSTGRES_PORT", port.to_string()), ("PATH", path)],
    );
    let _ = std::fs::remove_dir_all(&dir);

    let said = text(&out_hung);
    assert!(!out_hung.status.success(), "{said}");
    assert!(
        said.contains("did not return within 2s")
            && said.contains(&format!(
                "did not answer on 127.0.0.1:{port} within 2s; see {}",
                log.display()
            ))
            && said.contains("last words"),
        "the message names the address and the log, and quotes it: {said}"
    );
    assert!(
        took_hung < Duration::from_secs(30),
        "bounded: {took_hung:?}"
    );

    let said = text(&out_died);
    assert!(!out_died.status.success(), "{said}");
    assert!(
        said.contains("failed (status 1)")
            && said.contains("failed to start")
            && said.contains(&format!("see {}", log.display())),
        "the message quotes pg_ctlcluster and names the log: {said}"
    );
    assert!(took_died < Duration::from_secs(5), "at once: {took_died:?}");
}
