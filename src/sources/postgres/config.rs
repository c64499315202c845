//! The `postgres:` blocks of the configuration: the connection (under `sources`) and which job
//! library's queue a metric reads (under `metrics`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::primitives::{ConfigError, HumanDuration};
use crate::sources::credentials::Credentials;
use crate::sources::field_group::{self, Grouped};
use crate::sources::measure::{Measure, job_library_measure};
use crate::wake::WakeConfig;

pub use crate::sources::rates::DEFAULT_MAX_DRAIN_SECONDS;

/// PostgreSQL's own port.
pub const DEFAULT_PORT: u16 = 5432;

/// A PostgreSQL database holding job tables (`sources.<name>.postgres`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// `postgres://user@host:5432/db?sslmode=require` (no password in it: that comes from a
    /// file), instead of `host`, `port`, `dbname` and `username`.
    #[serde(default)]
    pub url: Option<String>,
    /// The server's host name or address.
    #[serde(default)]
    pub host: Option<String>,
    /// Its port (default 5432).
    #[serde(default)]
    pub port: Option<u16>,
    /// The database holding the job tables.
    #[serde(default)]
    pub dbname: Option<String>,
    /// `username`, `password_file`, `password_env`: the role the adapter logs in as.
    #[serde(skip)]
    pub credentials: Credentials,
    /// `disable`, `prefer`, `require` or `verify-full` (default `prefer`). Where TLS is used
    /// the server's certificate is always verified (against `ca_file`, else the system's
    /// roots) with its host name: rustls has no unverified mode.
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// PEM CA the server's certificate is checked against.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The longest one of the adapter's statements may run on the server (default: half the
    /// poll timeout); its lock waits get a quarter of that.
    #[serde(default)]
    pub statement_timeout: Option<HumanDuration>,
    /// Drain time served when a backlog is not moving at all. Default 86400 (1 day).
    #[serde(default)]
    pub max_drain_seconds: Option<f64>,
    /// Waking a metric at zero when the library notifies a new job (`LISTEN` on its channel;
    /// the libraries that send no notification are only polled).
    #[serde(default)]
    pub wake: WakeConfig,
    /// Overrides the global `poll_interval`.
    #[serde(default)]
    pub poll_interval: Option<HumanDuration>,
    /// Overrides the global `poll_timeout`.
    #[serde(default)]
    pub poll_timeout: Option<HumanDuration>,
}

/// Whether and how the connection uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, else plain TCP (libpq's default).
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS or no connection (the certificate and host name are checked in every TLS mode).
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        match s {
            "disable" => Some(SslMode::Disable),
            "prefer" => Some(SslMode::Prefer),
            "require" => Some(SslMode::Require),
            "verify-full" => Some(SslMode::VerifyFull),
            _ => None,
        }
    }
}

impl<'de> Grouped<'de> for PostgresSourceConfig {
    type Group = Credentials;
    const NAME: &'static str = "PostgresSourceConfig";
    const FIELDS: &'static [&'static str] = &[
        "url",
        "host",
        "port",
        "dbname",
        "username",
        "password_file",
        "password_env",
        "sslmode",
        "ca_file",
        "statement_timeout",
        "max_drain_seconds",
        "wake",
        "poll_interval",
        "poll_timeout",
    ];

    fn deserialize_own<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PostgresSourceConfig::deserialize(d)
    }

    fn set_group(&mut self, group: Credentials) {
        self.credentials = group;
    }
}

impl<'de> Deserialize<'de> for PostgresSourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        field_group::deserialize(d)
    }
}

impl std::fmt::Debug for PostgresSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSourceConfig")
            .field("url", &self.url)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("credentials", &self.credentials)
            .field("sslmode", &self.sslmode)
            .field("ca_file", &self.ca_file)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// Where a source connects, with the `url` taken apart (no password in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub dbname: String,
    /// Role, where given.
    pub user: Option<String>,
    /// TLS use.
    pub sslmode: SslMode,
}

impl std::fmt::Display for Endpoint {
    /// `postgres://user@host:port/db`: no password is ever in it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        write!(
            f,
            "postgres://{user}{}:{}/{}",
            self.host, self.port, self.dbname
        )
    }
}

impl PostgresSourceConfig {
    /// The drain time served for a backlog that does not move.
    pub fn max_drain_seconds(&self) -> f64 {
        self.max_drain_seconds.unwrap_or(DEFAULT_MAX_DRAIN_SECONDS)
    }

    /// The statement timeout for a poll bounded by `poll_timeout`.
    pub fn statement_timeout(&self, poll_timeout: Duration) -> Duration {
        let half = poll_timeout / 2;
        self.statement_timeout
            .map_or(half, |t| t.0.min(poll_timeout))
    }

    /// Where to connect: `url` taken apart, else `host`, `port`, `dbname`, `username`.
    ///
    /// # Errors
    /// The message (without any password), naming what is wrong.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let mut e = Endpoint {
            host: String::new(),
            port: DEFAULT_PORT,
            dbname: String::new(),
            user: self.credentials.username.clone(),
            sslmode: self.sslmode.unwrap_or(SslMode::Prefer),
        };
        if let Some(url) = &self.url {
            let rest = url
                .strip_prefix("postgres://")
                .or_else(|| url.strip_prefix("postgresql://"))
                .ok_or("url must start with postgres:// or postgresql://")?;
            let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
            let hostport = match authority.rsplit_once('@') {
                Some((userinfo, hostport)) => {
                    if userinfo.contains(':') {
                        // Never echoed: it holds a password.
                        return Err(
                            "url holds a password; give it with password_file or password_env"
                                .into(),
                        );
                    }
                    if e.user.is_some() {
                        return Err("give the role either in url or as username, not both".into());
                    }
                    e.user = Some(userinfo.to_string());
                    hostport
                }
                None => authority,
            };
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                    h,
                    p.parse::<u16>()
                        .map_err(|_| format!("url: port {p:?} is not a port number"))?,
                ),
                _ => (hostport, DEFAULT_PORT),
            };
            e.host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            e.port = port;
            e.dbname = db.to_string();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                match k {
                    "sslmode" => {
                        if self.sslmode.is_some() {
                            return Err("give sslmode either in url or as sslmode, not both".into());
                        }
                        e.sslmode = SslMode::parse(v).ok_or_else(|| {
                            format!(
                                "url: sslmode {v:?}: one of disable, prefer, require, verify-full"
                            )
                        })?;
                    }
                    "password" => {
                        return Err(
                            "url holds a password; give it with password_file or password_env"
                                .into(),
                        );
                    }
                    other => {
                        return Err(format!(
                            "url: parameter {other:?} is not read (sslmode is; the rest are fields of the block)"
                        ));
                    }
                }
            }
            if self.host.is_some() || self.port.is_some() || self.dbname.is_some() {
                return Err("give either url or host/port/dbname, not both".into());
            }
        } else {
            e.host = self.host.clone().unwrap_or_default();
            e.port = self.port.unwrap_or(DEFAULT_PORT);
            e.dbname = self.dbname.clone().unwrap_or_default();
        }
        if e.host.is_empty() {
            return Err("needs a host (host: or url:)".into());
        }
        if e.dbname.is_empty() {
            return Err("needs a database (dbname: or the url's path)".into());
        }
        if e.port == 0 {
            return Err("port 0 is not a port".into());
        }
        Ok(e)
    }

    pub(crate) fn validate(&self, at: &str, poll_timeout: Duration) -> Result<(), ConfigError> {
        self.endpoint().map_err(|e| ConfigError::invalid(at, e))?;
        let password =
            self.credentials.password_file.is_some() || self.credentials.password_env.is_some();
        let user = self.endpoint().ok().and_then(|e| e.user).is_some();
        if password && !user {
            return Err(ConfigError::invalid(
                at,
                "a password needs a role (username: or the url's user)",
            ));
        }
        if let Some(t) = self.statement_timeout {
            if t.0 < Duration::from_millis(10) {
                return Err(ConfigError::invalid(
                    format!("{at}.statement_timeout"),
                    "must be at least 10ms",
                ));
            }
            if t.0 > poll_timeout {
                return Err(ConfigError::invalid(
                    format!("{at}.statement_timeout"),
                    format!("must not be longer than the poll timeout ({poll_timeout:?})"),
                ));
            }
        }
        if self.ca_file.is_some() && self.sslmode == Some(SslMode::Disable) {
            return Err(ConfigError::invalid(
                format!("{at}.ca_file"),
                "is for TLS, and sslmode is disable",
            ));
        }
        if let Some(d) = self.max_drain_seconds
            && !(d.is_finite() && d > 0.0)
        {
            return Err(ConfigError::invalid(
                format!("{at}.max_drain_seconds"),
                "must be a positive number",
            ));
        }
        self.wake.validate(&format!("{at}.wake"))
    }

    pub(crate) fn resolve_secrets(&mut self, at: &str) -> Result<(), ConfigError> {
        self.credentials.resolve(at)
    }

    /// The files this connection reads secrets from, which the config watch re-reads.
    pub fn secret_files(&self) -> Vec<PathBuf> {
        self.credentials.password_file.iter().cloned().collect()
    }
}

/// The job libraries whose tables a preset reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgLibrary {
    /// Procrastinate (Python).
    Procrastinate,
    /// graphile-worker (Node.js).
    GraphileWorker,
    /// pg-boss (Node.js).
    PgBoss,
    /// pgmq (the extension's queue tables).
    Pgmq,
    /// Solid Queue (Rails).
    SolidQueue,
    /// GoodJob (Rails).
    GoodJob,
    /// Oban (Elixir).
    Oban,
    /// River (Go; Python and Ruby insert clients).
    River,
}

impl PgLibrary {
    /// Every library, in the order `discover` looks for them.
    pub const ALL: [PgLibrary; 8] = [
        PgLibrary::Procrastinate,
        PgLibrary::GraphileWorker,
        PgLibrary::PgBoss,
        PgLibrary::Pgmq,
        PgLibrary::SolidQueue,
        PgLibrary::GoodJob,
        PgLibrary::Oban,
        PgLibrary::River,
    ];

    /// The config spelling, served as the `library` label.
    pub fn as_str(self) -> &'static str {
        match self {
            PgLibrary::Procrastinate => "procrastinate",
            PgLibrary::GraphileWorker => "graphile-worker",
            PgLibrary::PgBoss => "pg-boss",
            PgLibrary::Pgmq => "pgmq",
            PgLibrary::SolidQueue => "solid-queue",
            PgLibrary::GoodJob => "good-job",
            PgLibrary::Oban => "oban",
            PgLibrary::River => "river",
        }
    }

    /// The schema its tables are in by default.
    pub fn default_schema(self) -> &'static str {
        match self {
            PgLibrary::GraphileWorker => "graphile_worker",
            PgLibrary::PgBoss => "pgboss",
            PgLibrary::Pgmq => "pgmq",
            PgLibrary::Procrastinate
            | PgLibrary::SolidQueue
            | PgLibrary::GoodJob
            | PgLibrary::Oban
            | PgLibrary::River => "public",
        }
    }
}

/// Which queues a metric reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSelection {
    /// One queue, by the name the library gives it.
    Named(String),
    /// Every queue with jobs (`"*"`), a series each.
    All,
}

/// A metric's `postgres:` block: a job library's queue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTarget {
    /// The job library whose tables hold the queue.
    pub library: PgLibrary,
    /// The queue's name, or `"*"` for a series per queue. graphile-worker's jobs in no named
    /// queue are the queue `""`; pg-boss's queues are its job names.
    pub queue: String,
    /// The schema of the library's tables, where not its default (pg-boss `schema`, Oban
    /// `prefix`, graphile-worker `schema`, River's schema): a plain lowercase identifier.
    #[serde(default)]
    pub schema: Option<String>,
}

impl PostgresTarget {
    /// The queues it reads.
    pub fn queues(&self) -> QueueSelection {
        if self.queue == "*" {
            QueueSelection::All
        } else {
            QueueSelection::Named(self.queue.clone())
        }
    }

    /// The schema its library's tables are read in.
    pub fn schema(&self) -> &str {
        self.schema
            .as_deref()
            .unwrap_or_else(|| self.library.default_schema())
    }

    /// Checks the block (`at` names it) for `measure`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self, at: &str, measure: Measure) -> Result<(), ConfigError> {
        job_library_measure(measure, self.library.as_str())
            .map_err(|e| ConfigError::invalid(at, e))?;
        if let Some(s) = &self.schema
            && !is_plain_identifier(s)
        {
            return Err(ConfigError::invalid(
                format!("{at}.schema"),
                format!(
                    "{s:?} is not a plain identifier (lowercase letters, digits and _, not starting with a digit, at most 63 bytes)"
                ),
            ));
        }
        if self.queue.contains('\0') {
            return Err(ConfigError::invalid(
                format!("{at}.queue"),
                "must not hold a NUL byte",
            ));
        }
        Ok(())
    }
}

/// Whether `s` is an identifier PostgreSQL takes unquoted and as written: the adapter writes
/// schema names into its statements, so only these are accepted.
pub fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(yaml: &str) -> PostgresSourceConfig {
        yaml_serde::from_str(yaml).expect("config")
    }

    #[test]
    fn a_url_is_taken_apart_and_a_password_in_it_is_refused_without_echoing_it() {
        let c = conn("url: postgres://adapter@db.example:6432/app?sslmode=require");
        assert_eq!(
            c.endpoint(),
            Ok(Endpoint {
                host: "db.example".into(),
                port: 6432,
                dbname: "app".into(),
                user: Some("adapter".into()),
                sslmode: SslMode::Require,
            })
        );
        assert_eq!(
            c.endpoint().expect("endpoint").to_string(),
            "postgres://adapter@db.example:6432/app"
        );
        for url in [
            "postgres://adapter:hunter2@db/app",
            "postgres://adapter@db/app?password=hunter2",
        ] {
            let err = conn(&format!("url: {url}")).endpoint().expect_err(url);
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("password_file"), "{err}");
        }
        let err = conn("url: postgres://db/app?connect_timeout=3")
            .endpoint()
            .expect_err("unknown parameter");
        assert!(err.contains("connect_timeout"), "{err}");
        let err = conn("url: postgres://db\nhost: other")
            .endpoint()
            .expect_err("both");
        assert!(err.contains("not both"), "{err}");
        let err = conn("url: postgres://db:5432/")
            .endpoint()
            .expect_err("no db");
        assert!(err.contains("database"), "{err}");
    }

    #[test]
    fn fields_make_an_endpoint_and_prefer_is_the_default() {
        let c = conn("host: 127.0.0.1\ndbname: jobs\nusername: reader\npassword_env: PGPASS");
        let e = c.endpoint().expect("endpoint");
        assert_eq!(e.port, DEFAULT_PORT);
        assert_eq!(e.sslmode, SslMode::Prefer);
        assert_eq!(e.user.as_deref(), Some("reader"));
        let err = yaml_serde::from_str::<PostgresSourceConfig>("host: h\nsslmode: verify-ca")
            .expect_err("verify-ca");
        assert!(err.to_string().contains("verify-ca"), "{err}");
    }

    #[test]
    fn the_statement_timeout_is_bounded_by_the_poll() {
        let c = conn("host: h\ndbname: d");
        assert_eq!(
            c.statement_timeout(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        let c = conn("host: h\ndbname: d\nstatement_timeout: 10s");
        assert!(c.validate("s", Duration::from_secs(5)).is_err());
        assert!(c.validate("s", Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn a_schema_is_a_plain_identifier_or_an_error() {
        for ok in ["pgboss", "graphile_worker", "_x1"] {
            assert!(is_plain_identifier(ok), "{ok}");
        }
        for bad in ["", "1x", "Pgboss", "a;drop", "a\"b", "a b", &"x".repeat(64)] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
        let t: PostgresTarget =
            yaml_serde::from_str("library: pg-boss\nqueue: '*'\nschema: 'x; drop'").expect("t");
        assert!(t.validate("m", Measure::Length).is_err());
        let t: PostgresTarget = yaml_serde::from_str("library: oban\nqueue: q").expect("t");
        assert!(t.validate("m", Measure::Length).is_ok());
        assert!(t.validate("m", Measure::GpuUtilization).is_err());
        assert_eq!(t.schema(), "public");
        assert_eq!(t.queues(), QueueSelection::Named("q".into()));
    }
}
