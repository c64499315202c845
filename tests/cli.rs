//! The binary as an operator runs it: `check` exit codes and table, `serve` with SIGTERM
//! (readiness turns 503 first, then the process exits cleanly), its log of a key that has
//! never existed and of a series that fails on its own and recovers.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cleanup, cmd, connect, prefix, redis_url};
use queue_metrics_adapter::apimachinery::label::encode_value;

const BIN: &str = env!("CARGO_BIN_EXE_queue-metrics-adapter");

/// A config file in the temp dir, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// `serve` of `cfg` on `port` (plain HTTP, no auth, no gRPC), its log piped.
fn serve(cfg: &ConfigFile, port: u16, shutdown_delay: &str) -> std::process::Child {
    Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shutdown-delay",
            shutdown_delay,
            "--grpc-listen",
            "127.0.0.1:0",
            "--insecure-http",
            "--disable-auth",
            "--config",
        ])
        .arg(&cfg.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts")
}

/// Everything `child` wrote to its piped stderr (until it exits).
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    stderr
}

/// Sends SIGTERM to `child`.
fn terminate(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits (15 s at most) for `child` to exit, and returns how it did.
async fn exit_of(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (20 s at most) until `/readyz` on `port` is 200; panics with the log otherwise.
async fn wait_ready(child: &mut std::process::Child, port: u16) {
    let http = common::http_client();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(&readyz).send().await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "serve exited with {status} before becoming ready:\n{}",
                stderr_of(child)
            );
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("never became ready within 20 s:\n{}", stderr_of(child));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_config(name: &str, text: &str) -> ConfigFile {
    let p = std::env::temp_dir().join(format!("qma-cli-{}-{name}.yaml", std::process::id()));
    std::fs::write(&p, text).expect("write config");
    ConfigFile(p)
}

#[test]
fn check_refuses_an_invalid_config_naming_the_field() {
    let cfg = write_config("invalid", "poll_interval: soon\nsources: {}\nmetrics: []\n");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg.0)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("poll_interval") && stderr.contains("\"soon\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_prints_a_table_and_fails_when_a_metric_fails() {
    let p = prefix("cli-check");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    cmd::<i64>(&mut c, &["LPUSH", &format!("{p}q"), "a", "b"]).await;
    cmd::<i64>(&mut c, &["HSET", &format!("{p}h"), "a", "1"]).await;
    let base = format!(
        "sources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: good, source: jobs, measure: length, redis: {{type: list, key: \"{p}q\"}}}}\n",
        redis_url()
    );
    let ok = write_config("ok", &base);
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&ok.0)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("METRIC") && stdout.contains("good") && stdout.contains("  2  "),
        "{stdout}"
    );
    // The key as a selector must say it, and the raw key a person recognises.
    let key = format!("{p}q");
    let shown = format!("{{key={:?} from {key:?}}}", encode_value(&key));
    assert!(stdout.contains(&shown), "{shown} in {stdout}");

    let bad = write_config(
        "bad",
        &format!(
            "{base}  - {{name: bad, source: jobs, measure: length, redis: {{type: list, key: \"{p}h\"}}}}\n"
        ),
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad.0)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("is not a list"), "{stdout}");
}

/// A rate needs two readings: `check` polls a source with rates twice, a second apart, and
/// says that its rate is over those polls.
#[tokio::test]
async fn check_reads_a_rate_over_two_polls_and_says_so() {
    let p = prefix("cli-rate");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut c = connect(&redis_url()).await;
    cmd::<String>(&mut c, &["XADD", &format!("{p}s"), "*", "n", "1"]).await;
    let cfg = write_config(
        "rate",
        &format!(
            "sources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: arrivals, source: jobs, measure: arrival_rate, window: 10s, redis: {{type: stream, key: \"{p}s\"}}}}\n",
            redis_url()
        ),
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg.0)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("arrivals") && stdout.contains("over check's two polls"),
        "{stdout}"
    );
}

#[tokio::test]
async fn serve_turns_unready_on_sigterm_then_exits_cleanly() {
    let p = prefix("cli-serve");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let port = free_port();
    let cfg = write_config(
        "serve",
        &format!(
            "poll_interval: 200ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: q, source: jobs, measure: length, redis: {{type: list, key: \"{p}q\"}}}}\n",
            redis_url()
        ),
    );
    let mut child = serve(&cfg, port, "1s");
    wait_ready(&mut child, port).await;
    let http = common::http_client();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let metric = http
        .get(format!(
            "http://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/q"
        ))
        .send()
        .await
        .expect("metric");
    assert_eq!(metric.status(), 200);

    terminate(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http
        .get(&readyz)
        .send()
        .await
        .expect("still serving during the drain delay");
    assert_eq!(r.status(), 503, "readiness is 503 while draining");

    let exit = exit_of(&mut child).await;
    let stderr = stderr_of(&mut child);
    assert!(exit.success(), "exit {exit:?}: {stderr}");
    assert!(
        stderr.contains("SIGTERM received") && stderr.contains("stopped"),
        "{stderr}"
    );
    // Logs to a pipe are plain text: no ANSI colour codes for a log collector to store.
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    // The key was never written: served as 0 (an empty list), and said so once, not per poll.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("has not since start"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains(&format!("{p}q")), "{stderr}");
}

#[tokio::test]
async fn a_password_reaches_no_log_line_error_or_metrics_whatever_it_contains() {
    // Passwords that confuse URL readers: an unescaped '/', '@', '?', '#', ':' and '%' (these
    // make the URL invalid), percent-encoded ones (valid, decoded by the client), a plain one.
    let mut served = 0;
    for (i, password) in [
        "s3cr3t-Passw0rd",
        "p%2Fss%40w%3F",
        "pa/ss@w0rd",
        "x?y#z:w%41",
        "@@/:/@",
    ]
    .iter()
    .enumerate()
    {
        let port = free_port();
        let secret_file =
            std::env::temp_dir().join(format!("qma-cli-{}-pw{i}", std::process::id()));
        std::fs::write(&secret_file, format!("{password}\n")).expect("password file");
        // One source with the password in its URL (nothing listens on port 1), one with it in a
        // password file: both fail to connect, over and over. A password that makes the URL
        // invalid stops the process with a config error instead.
        let cfg = write_config(
            &format!("secret-{i}"),
            &format!(
                "poll_interval: 100ms\nmax_backoff: 200ms\nsources:\n  inline:\n    redis: {{url: \"redis://user:{password}@127.0.0.1:1/0\"}}\n  file:\n    rabbitmq: {{management_url: \"http://127.0.0.1:1\", username: guest, password_file: \"{}\"}}\nmetrics:\n  - {{name: q, source: inline, measure: length, redis: {{type: list, key: q}}}}\n  - {{name: r, source: file, measure: ready, rabbitmq: {{queue: q}}}}\n",
                secret_file.display()
            ),
        );
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--shutdown-delay",
                "0s",
                "--grpc-listen",
                "off",
                "--insecure-http",
                "--disable-auth",
                "--config",
            ])
            .arg(&cfg.0)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let answers = observe(&mut child, port).await;
        let stderr = stderr_of(&mut child);
        let _ = std::fs::remove_file(&secret_file);
        match &answers {
            None => assert!(stderr.contains("sources.inline.redis.url"), "{stderr}"),
            Some(answers) => {
                served += 1;
                assert!(
                    answers.contains("cannot connect"),
                    "the sources failed: {answers}"
                );
                assert!(
                    stderr.contains("poll failed"),
                    "the failures were logged: {stderr}"
                );
            }
        }
        let decoded = password
            .replace("%2F", "/")
            .replace("%40", "@")
            .replace("%3F", "?");
        for (what, text) in [
            ("answers", answers.as_deref().unwrap_or("")),
            ("logs", &stderr),
        ] {
            for secret in [*password, decoded.as_str()] {
                assert!(
                    !text.contains(secret),
                    "the password {secret:?} reached the {what}:\n{text}"
                );
            }
        }
    }
    assert_eq!(
        served, 2,
        "the two valid URLs were served, failing to connect"
    );
}

/// Waits for `child` to be ready, reads both metrics and `/metrics`, and stops it with
/// SIGTERM; `None` when it exited before becoming ready (a refused config).
async fn observe(child: &mut std::process::Child, port: u16) -> Option<String> {
    let http = common::http_client();
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return None;
        }
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut answers = String::new();
    for path in [
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/q",
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/r",
        "/metrics",
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answer");
        answers.push_str(&r.text().await.expect("body"));
    }
    terminate(child);
    exit_of(child).await;
    Some(answers)
}

#[test]
fn a_port_in_use_names_its_flag() {
    let cfg = write_config(
        "port-in-use",
        "sources:\n  jobs:\n    redis: {url: \"redis://127.0.0.1:6379/0\"}\nmetrics:\n  - {name: q, source: jobs, measure: length, redis: {type: list, key: \"qma-test:cli-port:q\"}}\n",
    );
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    for (flag, name) in [("--grpc-listen", "KEDA gRPC"), ("--health-listen", "probe")] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", flag, &addr];
        if flag != "--grpc-listen" {
            args.extend(["--grpc-listen", "127.0.0.1:0"]);
        }
        let out = Command::new(BIN)
            .args(args)
            .args(["--insecure-http", "--disable-auth", "--config"])
            .arg(&cfg.0)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{addr} ({flag}")) && stderr.contains(name),
            "names the flag: {stderr}"
        );
    }
}

/// A series whose own read fails (a key of the wrong type) while its source polls well is
/// logged once as failing and once as recovered, however many polls it fails (issue 30), and
/// `/metrics` counts it among the metric's series in error meanwhile. Before, nothing was logged.
#[tokio::test]
async fn a_series_failing_on_its_own_is_logged_once_when_it_fails_and_once_when_it_recovers() {
    let p = prefix("cli-series-log");
    let _clean = Cleanup {
        url: redis_url(),
        prefix: p.clone(),
    };
    let mut conn = connect(&redis_url()).await;
    let key = format!("{p}q");
    let _: i64 = cmd(&mut conn, &["HSET", &key, "not", "a list"]).await;
    let port = free_port();
    let cfg = write_config(
        "series-log",
        &format!(
            "poll_interval: 100ms\nsources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: q, source: jobs, measure: length, redis: {{type: list, key: \"{key}\"}}}}\n  - {{name: fine, source: jobs, measure: length, redis: {{type: list, key: \"{p}fine\"}}}}\n",
            redis_url()
        ),
    );
    let mut child = serve(&cfg, port, "0s");
    wait_ready(&mut child, port).await;
    let http = common::http_client();
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http.get(format!("{base}{path}")).send().await.expect("get");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    let (status, body) = get("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/q").await;
    assert_eq!(status, 503, "{body}");
    let (_, metrics) = get("/metrics").await;
    assert!(
        metrics.contains("qma_metric_series{metric=\"q\",state=\"error\"} 1")
            && metrics.contains("qma_metric_series{metric=\"fine\",state=\"error\"} 0"),
        "{metrics}"
    );
    // Twenty polls or so of the same failure, then the key becomes a list.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _: i64 = cmd(&mut conn, &["DEL", &key]).await;
    let _: i64 = cmd(&mut conn, &["RPUSH", &key, "job"]).await;
    let start = Instant::now();
    while get("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/q")
        .await
        .0
        != 200
    {
        assert!(start.elapsed() < Duration::from_secs(10), "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminate(&child);
    exit_of(&mut child).await;
    let stderr = stderr_of(&mut child);
    let failing: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("series failing"))
        .collect();
    let recovered: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("series recovered"))
        .collect();
    assert_eq!(failing.len(), 1, "{stderr}");
    assert_eq!(recovered.len(), 1, "{stderr}");
    assert!(
        failing[0].contains("WARN") && failing[0].contains("metric=q"),
        "{stderr}"
    );
    assert!(
        failing[0].contains("WRONGTYPE") || failing[0].contains("hash"),
        "{stderr}"
    );
    assert!(
        recovered[0].contains("INFO") && recovered[0].contains("metric=q"),
        "{stderr}"
    );
}

/// `discover` as an operator runs it: the config on standard output (it loads, `check` passes
/// it), the summary on standard error; a password written in a URL is refused without
/// printing it, and a server that does not answer is an error naming it.
#[tokio::test]
async fn discover_prints_a_config_check_accepts_and_its_summary_apart() {
    let server = common::RedisProcess::start().await;
    let mut c = connect(&server.url()).await;
    cmd::<i64>(&mut c, &["SADD", "queues", "embed"]).await;
    let job = format!(
        r#"{{"enqueued_at":{}.5}}"#,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    );
    cmd::<i64>(&mut c, &["LPUSH", "queue:embed", &job, &job]).await;
    let url = format!("redis://127.0.0.1:{}", server.port);
    let out = Command::new(BIN)
        .args(["discover", "--redis", &url])
        .output()
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("sidekiq_embed_length") && !stdout.contains("LIBRARY"),
        "{stdout}"
    );
    assert!(
        stderr.contains("LIBRARY") && stderr.contains("sidekiq"),
        "{stderr}"
    );
    let written = write_config("discovered", &stdout);
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&written.0)
        .output()
        .expect("runs");
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let out = Command::new(BIN)
        .args(["discover", "--redis", "redis://:hunter2@127.0.0.1:6379"])
        .output()
        .expect("runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("--password-env") && !all.contains("hunter2"),
        "{all}"
    );

    let out = Command::new(BIN)
        .args([
            "discover",
            "--redis",
            &format!("redis://127.0.0.1:{}", free_port()),
        ])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
}
