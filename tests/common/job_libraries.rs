//! The job libraries' real clients and workers, as `scripts/ensure-job-libraries.sh` installs
//! them (pinned versions from PyPI and npm under `target/job-libraries/`, Debian's Sidekiq): a
//! test hands a short script to the library's own interpreter and reads what it prints.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

/// Where the installer put the libraries.
fn dir() -> PathBuf {
    std::env::var_os("QMA_JOB_LIBRARIES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/job-libraries"))
}

fn missing(what: &str) -> String {
    format!(
        "{what} is not installed under {}: run scripts/ensure-job-libraries.sh (make test does)",
        dir().display()
    )
}

/// Runs `script` with the virtualenv's Python (RQ, dramatiq, arq, huey), `args` as
/// `sys.argv[1:]`, and returns its standard output; panics with its standard error if it fails
/// or takes longer than `limit`.
pub async fn python(script: &str, args: &[&str], limit: Duration) -> String {
    venv_python(
        "venv",
        "the Python job libraries' virtualenv",
        script,
        args,
        limit,
    )
    .await
}

/// Runs `script` with the Celery virtualenv's Python (Celery and kombu need a newer redis
/// client than arq accepts); as [`python`].
pub async fn celery_python(script: &str, args: &[&str], limit: Duration) -> String {
    venv_python("venv-celery", "Celery's virtualenv", script, args, limit).await
}

async fn venv_python(
    venv: &str,
    what: &str,
    script: &str,
    args: &[&str],
    limit: Duration,
) -> String {
    let python = dir().join(venv).join("bin/python");
    assert!(python.exists(), "{}", missing(what));
    let mut command = Command::new(python);
    command.arg("-c").arg(script).args(args);
    run(command, limit).await
}

/// Starts Celery's own worker (`celery -A <module> worker -P solo -Q <queue>`) with `dir` on
/// its path and `QMA_BROKER` set to `broker`; it is killed when the returned child is dropped.
pub fn celery_worker(
    dir: &std::path::Path,
    module: &str,
    queue: &str,
    broker: &str,
) -> tokio::process::Child {
    let mut command = Command::new(self::dir().join("venv-celery/bin/celery"));
    command
        .current_dir(dir)
        .env("PYTHONPATH", dir)
        .env("QMA_BROKER", broker)
        .args([
            "-A",
            module,
            "worker",
            "-P",
            "solo",
            "-Q",
            queue,
            "--without-gossip",
        ])
        .args([
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ]);
    spawn_worker(command, || missing("Celery"))
}

/// Starts huey's own consumer (`huey_consumer <module>.huey`, one thread) with `dir` on its path
/// and `QMA_BROKER` set to `broker`; it is killed when the returned child is dropped.
pub fn huey_consumer(dir: &std::path::Path, module: &str, broker: &str) -> tokio::process::Child {
    let mut command = Command::new(self::dir().join("venv/bin/huey_consumer"));
    command
        .current_dir(dir)
        .env("PYTHONPATH", dir)
        .env("QMA_BROKER", broker)
        .arg(format!("{module}.huey"))
        .args(["-w", "1", "-k", "thread"]);
    spawn_worker(command, || missing("huey"))
}

/// Runs `script` with Node.js, its `require` finding BullMQ and bee-queue, `args` as
/// `process.argv.slice(1)`; as [`python`].
pub async fn node(script: &str, args: &[&str], limit: Duration) -> String {
    node_in("node", "the Node.js job libraries", script, args, limit).await
}

/// Runs `script` with Node.js, `NODE_PATH` the `node_modules` of `modules` under the install
/// dir (`what` names it when missing); as [`node`].
async fn node_in(
    modules: &str,
    what: &str,
    script: &str,
    args: &[&str],
    limit: Duration,
) -> String {
    let modules = dir().join(modules).join("node_modules");
    assert!(modules.exists(), "{}", missing(what));
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", modules)
        .arg("-e")
        .arg(script)
        .arg("--")
        .args(args);
    run(command, limit).await
}

/// Runs `script` with Ruby, which finds Debian's Sidekiq, `args` as `ARGV`; as [`python`].
pub async fn ruby(script: &str, args: &[&str], limit: Duration) -> String {
    let mut command = Command::new("ruby");
    command.arg("-e").arg(script).args(args);
    run(command, limit).await
}

/// Starts Sidekiq's own server process (`sidekiq -r <file> -q <queue>`, one thread) against
/// `url`; it is killed when the returned child is dropped.
pub fn sidekiq_worker(file: &std::path::Path, queue: &str, url: &str) -> tokio::process::Child {
    let mut command = Command::new("sidekiq");
    command
        .args(["-r"])
        .arg(file)
        .args(["-q", queue, "-c", "1"])
        .env("REDIS_URL", url);
    spawn_worker(command, || {
        "install Debian's ruby-sidekiq (scripts/ensure-job-libraries.sh sidekiq)".to_string()
    })
}

/// Starts a library's worker process, its output discarded, killed when the child is dropped;
/// `hint` says what to install when it cannot start.
fn spawn_worker(mut command: Command, hint: impl FnOnce() -> String) -> tokio::process::Child {
    let shown = format!("{:?}", command.as_std().get_program());
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: {e}; {}", hint()))
}

async fn run(mut command: Command, limit: Duration) -> String {
    let shown = format!("{command:?}").chars().take(200).collect::<String>();
    // A script that overruns is killed with the future that waits for it.
    command.kill_on_drop(true);
    let out = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{shown} took longer than {limit:?}"))
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits (bounded) until a worker has recorded `count` runs in the Redis list `key`, lets a
/// second run of any job show, and checks each of `0..count` ran exactly once.
pub async fn recorded_once(conn: &mut redis::aio::MultiplexedConnection, key: &str, count: usize) {
    let start = std::time::Instant::now();
    while super::cmd::<usize>(conn, &["LLEN", key]).await < count {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the worker ran every job in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ran: Vec<usize> = super::cmd::<Vec<String>>(conn, &["LRANGE", key, "0", "-1"])
        .await
        .iter()
        .map(|n| n.parse().expect("a job number"))
        .collect();
    ran.sort_unstable();
    assert_eq!(ran, (0..count).collect::<Vec<_>>(), "every job ran once");
}

/// Waits (up to `limit`) until `metric` answers an error that contains `text`.
pub async fn check_error(a: &super::Adapter, metric: &str, text: &str, limit: Duration) {
    let (status, body) = a
        .wait_for(metric, None, limit, |status, body| {
            status != 200 && body.to_string().contains(text)
        })
        .await;
    assert_ne!(status, 200, "{body}");
}

/// Runs `script` with the Postgres job libraries' Python (Procrastinate, River's insert
/// client); as [`python`].
pub async fn pg_python(script: &str, args: &[&str], limit: Duration) -> String {
    venv_python(
        "venv-postgres",
        "the Postgres job libraries' virtualenv",
        script,
        args,
        limit,
    )
    .await
}

/// Runs `script` with Node.js, its `require` finding pg-boss and graphile-worker; as
/// [`node`].
pub async fn pg_node(script: &str, args: &[&str], limit: Duration) -> String {
    node_in(
        "node-postgres",
        "the Postgres job libraries for Node.js",
        script,
        args,
        limit,
    )
    .await
}
