//! A database of its own per test on the PostgreSQL at 127.0.0.1:5432 (`make test` starts it:
//! scripts/ensure-postgres.sh), with a login role that has only what a preset's README grants
//! say; both are dropped when the test ends.

use std::time::Duration;

use tokio_postgres::NoTls;

use super::{Adapter, on_own_runtime, quantity};

/// The server the tests use (a superuser over TCP, trust authentication).
pub const HOST: &str = "127.0.0.1";
/// Its port.
pub const PORT: u16 = 5432;
/// The superuser the tests set up with.
pub const ADMIN: &str = "postgres";

/// A connection string for `db` as `user`, for the libraries' own clients.
pub fn url(db: &str, user: &str) -> String {
    format!("postgres://{user}@{HOST}:{PORT}/{db}")
}

/// A superuser session on `db`.
pub async fn admin(db: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host={HOST} port={PORT} user={ADMIN} dbname={db} connect_timeout=5"),
        NoTls,
    )
    .await
    .unwrap_or_else(|e| {
        panic!("PostgreSQL on {HOST}:{PORT} as {ADMIN} (make test starts it: scripts/ensure-postgres.sh): {e}")
    });
    tokio::spawn(connection);
    client
}

/// Applies the SQL file `tests/fixtures/postgres/<file>` to `db` on 127.0.0.1:`port` as the
/// superuser, with `psql` (`PGSSLMODE=sslmode`).
async fn psql_fixture(port: u16, db: &str, file: &str, sslmode: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/postgres")
        .join(file);
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-U", ADMIN])
            .arg("-p")
            .arg(port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-f")
            .arg(&path)
            .env("PGSSLMODE", sslmode)
            .output(),
    )
    .await
    .expect("psql within 30 s")
    .expect("psql runs (make test installs postgresql-client)");
    assert!(
        out.status.success(),
        "psql -f {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database and a SELECT-only login role of a test's own, dropped (with every session on
/// them) when this is dropped.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// The reader role's name (it logs in without a password: trust on 127.0.0.1).
    pub reader: String,
}

impl TestDb {
    /// Creates `qma_<test>_<pid>_<nanos>` and its reader role (no privilege yet).
    pub async fn create(test: &str) -> TestDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("qma_{test}_{}_{nanos}", std::process::id());
        let reader = format!("{name}_reader");
        let c = admin("postgres").await;
        // CREATE DATABASE runs outside a transaction: a statement of its own.
        for sql in [
            format!("CREATE DATABASE {name}"),
            format!(
                "CREATE ROLE {reader} LOGIN; REVOKE ALL ON DATABASE {name} FROM PUBLIC; GRANT CONNECT ON DATABASE {name} TO {reader}"
            ),
        ] {
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        TestDb { name, reader }
    }

    /// A superuser session on this database.
    pub async fn admin(&self) -> tokio_postgres::Client {
        admin(&self.name).await
    }

    /// Runs `sql` (several statements) as the superuser.
    pub async fn exec(&self, sql: &str) {
        self.admin()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Applies the SQL file `tests/fixtures/postgres/<file>` as the superuser, with `psql`.
    pub async fn apply_fixture(&self, file: &str) {
        psql_fixture(PORT, &self.name, file, "disable").await;
    }

    /// A single number from `sql` as the superuser.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let row = self
            .admin()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.get::<_, i64>(0)
    }

    /// The source block for this database as the reader role.
    pub fn source_yaml(&self) -> String {
        format!(
            "postgres: {{host: {HOST}, port: {PORT}, dbname: {}, username: {}, sslmode: disable}}",
            self.name, self.reader
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, reader) = (self.name.clone(), self.reader.clone());
        on_own_runtime(async move {
            let c = admin("postgres").await;
            for sql in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("DROP ROLE IF EXISTS {reader}"),
            ] {
                let _ = c.batch_execute(&sql).await;
            }
        });
    }
}

/// A private PostgreSQL server of a test's own, started from Debian's binaries (the newest
/// `/usr/lib/postgresql/<version>/bin`, 15 or later) on a free port under its own scratch
/// directory (`<tmp>/qma-pg-test-<pid>-<n>`: the data directory `data/`, the socket, the log
/// `postgres.log`, the PEM files), with trust authentication for 127.0.0.1 and the superuser
/// [`ADMIN`]; optionally TLS (a fresh CA, a server certificate for 127.0.0.1 and localhost) and
/// a `pg_hba.conf` that lets in TLS sessions only (`hostssl`, no `host` line). It can be
/// stopped (fast shutdown, as an operator's restart does) and started again on the same port
/// and data; it is killed and its directory removed when dropped.
///
/// `initdb` and `postgres` refuse to run as root: as root they run as the OS user `postgres`
/// (`setpriv`, which execs, so the child's pid is the postmaster's), which then owns the
/// directory; otherwise as the current user. Started for speed: `fsync=off`, small buffers,
/// no autovacuum.
#[derive(Debug)]
pub struct PrivatePostgres {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The scratch directory, removed on drop.
    pub dir: std::path::PathBuf,
    /// The test CA's PEM file, with TLS.
    pub ca_file: Option<std::path::PathBuf>,
    /// Whether the server offers TLS.
    pub tls: bool,
    bin: std::path::PathBuf,
    /// `(uid, gid)` to run the binaries as (when this process is root).
    run_as: Option<(u32, u32)>,
    child: Option<std::process::Child>,
}

impl PrivatePostgres {
    /// How long `initdb`, a start or a stop may take.
    const TIMEOUT: Duration = Duration::from_secs(20);

    /// A server without TLS (plain sessions only): see [`PrivatePostgres::start_with`].
    pub fn start() -> PrivatePostgres {
        Self::start_with(false, false)
    }

    /// Runs `initdb` in a fresh scratch directory and starts the server on a free port, waiting
    /// (bounded) until it accepts connections. `tls`: TLS with a fresh CA's server certificate
    /// for 127.0.0.1 and localhost ([`PrivatePostgres::ca_file`]); `hostssl_only` (needs `tls`):
    /// only TLS sessions are let in over TCP (`hostssl` lines, no `host` line), so a plain
    /// session is refused by `pg_hba.conf`.
    pub fn start_with(tls: bool, hostssl_only: bool) -> PrivatePostgres {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        assert!(tls || !hostssl_only, "hostssl_only needs tls");
        let bin = Self::bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "qma-pg-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("postgres scratch dir");
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let run_as = root.then(Self::os_user);
        let own = |path: &std::path::Path| {
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
            }
        };
        own(&dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let mut server = PrivatePostgres {
            port,
            dir: dir.clone(),
            ca_file: None,
            tls,
            bin,
            run_as,
            child: None,
        };
        let data = dir.join("data");
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                ADMIN,
                "--auth=trust",
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb -D {}: {}{}",
            data.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             shared_buffers = 16MB\nmax_connections = 30\nautovacuum = off\nhuge_pages = off\n",
        );
        conf.push_str(&format!(
            "port = {port}\nunix_socket_directories = '{}'\n",
            dir.display()
        ));
        if tls {
            let ca = super::pki::ca("qma-test-postgres-ca");
            let (cert, key) = super::pki::leaf(&ca, &["127.0.0.1", "localhost"]);
            let write = |name: &str, pem: &str, mode: u32| {
                let path = dir.join(name);
                std::fs::write(&path, pem).expect("write PEM");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .expect("chmod PEM");
                own(&path);
                path
            };
            server.ca_file = Some(write("ca.pem", &ca.pem(), 0o644));
            let cert = write("server.pem", &cert, 0o644);
            // PostgreSQL refuses a key others may read, or one another user owns.
            let key = write("server-key.pem", &key, 0o600);
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                cert.display(),
                key.display()
            ));
        }
        let append = |file: &str, text: &str| {
            use std::io::Write as _;
            let path = data.join(file);
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        };
        append("postgresql.conf", &conf);
        if hostssl_only {
            let path = data.join("pg_hba.conf");
            std::fs::write(
                &path,
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
            )
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        server.start_again();
        server
    }

    /// `<bin>/<program>`, run as the OS user `postgres` when this process is root, in the
    /// scratch directory.
    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        let mut c = match self.run_as {
            Some((uid, gid)) => {
                let mut c = std::process::Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(&path);
                c
            }
            None => std::process::Command::new(&path),
        };
        c.current_dir(&self.dir)
            .env_remove("PGDATA")
            .stdin(std::process::Stdio::null());
        c
    }

    /// The server's log (its start-up errors and refused logins included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Whether the postmaster runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Starts the server (again) on its port and data directory, waiting until it accepts
    /// connections (`pg_isready`), at most 20 s.
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "the server on {} runs", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .expect("postgres log");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs: {e}", self.bin.join("postgres").display()));
        self.child = Some(child);
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "postgres on port {} exited ({status}) before accepting connections; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            // 0: accepting connections (a refused login counts: the server answered).
            let ready = std::process::Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", HOST, "-t", "1", "-p"])
                .arg(self.port.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if start.elapsed() > Self::TIMEOUT {
                self.signal("QUIT");
                panic!(
                    "postgres on port {} did not accept connections within {:?}; its log:\n{}",
                    self.port,
                    Self::TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGINT (fast shutdown: sessions are ended, the server says goodbye and exits)
    /// and waits until the postmaster has exited (at most 20 s, then SIGKILL).
    pub fn stop(&mut self) {
        self.signal("INT");
    }

    /// Sends `signal` to the postmaster and waits (bounded) for it to exit.
    fn signal(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status();
        let start = std::time::Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Self::TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "postgres on port {} did not exit on SIG{signal} within {:?}; its log:\n{}",
                    self.port,
                    Self::TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A superuser session on `db`, over TLS (verifying the test CA) when the server has it.
    pub async fn admin(&self, db: &str) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host(HOST)
            .port(self.port)
            .user(ADMIN)
            .dbname(db)
            .connect_timeout(Duration::from_secs(5));
        let what = format!("private PostgreSQL on {HOST}:{} as {ADMIN}", self.port);
        match &self.ca_file {
            Some(ca) => {
                let pem = std::fs::read(ca).expect("test CA");
                let tls = queue_metrics_adapter::tls::client_config(Some(&pem)).expect("TLS");
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, connection) = config
                    .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}: {}", self.log()));
                tokio::spawn(connection);
                client
            }
            None => {
                let (client, connection) = config
                    .connect(NoTls)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}: {}", self.log()));
                tokio::spawn(connection);
                client
            }
        }
    }

    /// Runs `sql` (several statements) on `db` as the superuser.
    pub async fn exec(&self, db: &str, sql: &str) {
        self.admin(db)
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Applies `tests/fixtures/postgres/<file>` to `db` as the superuser, with `psql` (over
    /// TLS, unverified, when the server has it).
    pub async fn apply_fixture(&self, db: &str, file: &str) {
        let sslmode = if self.tls { "require" } else { "disable" };
        psql_fixture(self.port, db, file, sslmode).await;
    }

    /// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `postgres`
    /// (`QMA_TEST_PG_BIN` names another).
    fn bin_dir() -> std::path::PathBuf {
        if let Some(dir) = std::env::var_os("QMA_TEST_PG_BIN") {
            return dir.into();
        }
        let root = std::path::Path::new("/usr/lib/postgresql");
        let mut found: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                (bin.join("initdb").exists() && bin.join("postgres").exists())
                    .then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
            panic!("no /usr/lib/postgresql/<version>/bin with initdb and postgres (Debian's postgresql; make test installs it)")
        })
    }

    /// The OS user `postgres`'s uid and gid, from /etc/passwd.
    fn os_user() -> (u32, u32) {
        let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
        passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&"postgres") && f.len() > 3)
                    .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                    .flatten()
            })
            .expect("an OS user postgres (Debian's postgresql package makes it) to run initdb and postgres as root")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT): the postmaster ends its children and exits at once.
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg("-QUIT")
                .arg(child.id().to_string())
                .status();
            let start = std::time::Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(5) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A config polling `db` every 200 ms as its reader, with a preset metric per
/// `(name, measure, library, queue)`.
pub fn presets_config(db: &TestDb, metrics: &[(&str, &str, &str, &str)]) -> String {
    let mut out = format!(
        "poll_interval: 200ms\nsources:\n  db:\n    {}\nmetrics:\n",
        db.source_yaml()
    );
    for (name, measure, library, queue) in metrics {
        out.push_str(&format!(
            "  - {{name: {name}, source: db, measure: {measure}, postgres: {{library: {library}, queue: '{queue}'}}}}\n"
        ));
    }
    out
}

/// The values of every series of `metric`, by their `queue` label; checks each carries
/// `library: <library>`.
pub async fn by_queue(
    a: &Adapter,
    metric: &str,
    library: &str,
) -> std::collections::BTreeMap<String, f64> {
    let (status, body) = a.metric(metric, None).await;
    assert_eq!(status, 200, "{metric}: {body}");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            assert_eq!(i["metricLabels"]["library"], library, "{body}");
            (
                i["metricLabels"]["queue"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
                quantity(i["value"].as_str().expect("value")),
            )
        })
        .collect()
}

/// The one value `metric` serves (a 200 with one item).
pub async fn value(a: &Adapter, metric: &str) -> f64 {
    let (status, body) = a.metric(metric, None).await;
    assert_eq!(status, 200, "{metric}: {body}");
    super::single_value(&body)
}
