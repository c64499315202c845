//! The `postgres:` blocks of the configuration: the connection (under `sources`) and what a
//! metric reads (under `metrics`): a job library's queue, a described table or a query.

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
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "postgres://{user}{host}:{}/{}", self.port, self.dbname)
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
            let port_of = |p: &str| {
                p.parse::<u16>()
                    .map_err(|_| format!("url: port {p:?} is not a port number"))
            };
            let (host, port) = match hostport.strip_prefix('[') {
                // An IPv6 address: `[::1]` or `[::1]:5432`.
                Some(rest) => {
                    let (h, after) = rest
                        .split_once(']')
                        .ok_or("url: an IPv6 address needs its closing ]")?;
                    match after.strip_prefix(':') {
                        Some(p) => (h, port_of(p)?),
                        None if after.is_empty() => (h, DEFAULT_PORT),
                        None => return Err(format!("url: {after:?} after the address")),
                    }
                }
                None => match hostport.rsplit_once(':') {
                    Some((h, p)) => (h, port_of(p)?),
                    None => (hostport, DEFAULT_PORT),
                },
            };
            e.host = host.to_string();
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

/// A metric's `postgres:` block: a job library's queue (`library`), a table of the user's
/// described by a fixed grammar (`table`), or a read-only query of the user's (`query`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTarget {
    /// The job library whose tables hold the queue.
    #[serde(default)]
    pub library: Option<PgLibrary>,
    /// A table of another kind of queue.
    #[serde(default)]
    pub table: Option<TableSpec>,
    /// A query returning `value` (and `queue` for a series per queue), run in a `READ ONLY`
    /// transaction with the statement timeout, as a subquery (one statement).
    #[serde(default)]
    pub query: Option<String>,
    /// The queue's name, or `"*"` for a series per queue. graphile-worker's jobs in no named
    /// queue are the queue `""`; pg-boss's queues are its job names. Default `"*"`.
    #[serde(default)]
    pub queue: Option<String>,
    /// The schema of the tables, where not the library's default (pg-boss `schema`, Oban
    /// `prefix`, graphile-worker `schema`, River's schema) or `public`: a plain lowercase
    /// identifier.
    #[serde(default)]
    pub schema: Option<String>,
}

/// What a metric's block reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetKind<'a> {
    /// A job library's tables.
    Library(PgLibrary),
    /// A described table.
    Table(&'a TableSpec),
    /// A query of the user's.
    Query(&'a str),
}

/// A queue table described by a fixed grammar (`metrics[].postgres.table`): never free SQL.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// The table (in `schema`, default `public`).
    pub name: String,
    /// The column naming each row's queue; none: one queue, `""`.
    #[serde(default)]
    pub queue_column: Option<String>,
    /// The conditions, all of them, that make a row waiting (`length`,
    /// `oldest_age_seconds`).
    pub ready: Vec<Condition>,
    /// When each row became ready (`oldest_age_seconds`): `timestamp with time zone`, or
    /// `timestamp without time zone` holding UTC (say so with `time_zone: UTC`).
    #[serde(default)]
    pub time_column: Option<String>,
    /// `UTC`: the `timestamp without time zone` columns hold UTC (the only zone taken).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The conditions of a row a worker holds (`in_flight`).
    #[serde(default)]
    pub in_flight: Option<Vec<Condition>>,
    /// The conditions of a row waiting for its time (`delayed`).
    #[serde(default)]
    pub delayed: Option<Vec<Condition>>,
    /// The conditions of a row that failed (`failed`).
    #[serde(default)]
    pub failed: Option<Vec<Condition>>,
}

/// One condition on a column: exactly one of its tests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The column (a plain identifier).
    pub column: String,
    /// `column = value`.
    #[serde(default)]
    pub equals: Option<Literal>,
    /// `column IN (values)`.
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Literal>>,
    /// `column IS NULL` (true) or `IS NOT NULL` (false).
    #[serde(default)]
    pub is_null: Option<bool>,
    /// `column <= now()` (true) or `column > now()` (false).
    #[serde(default)]
    pub not_after_now: Option<bool>,
}

/// A value a condition compares with: text or a number, written as an SQL literal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// A whole number.
    Integer(i64),
    /// Text (quoted, `'` doubled).
    Text(String),
}

impl PostgresTarget {
    /// What it reads.
    pub fn kind(&self) -> Option<TargetKind<'_>> {
        match (&self.library, &self.table, &self.query) {
            (Some(l), None, None) => Some(TargetKind::Library(*l)),
            (None, Some(t), None) => Some(TargetKind::Table(t)),
            (None, None, Some(q)) => Some(TargetKind::Query(q)),
            _ => None,
        }
    }

    /// The queues it reads.
    pub fn queues(&self) -> QueueSelection {
        match self.queue.as_deref() {
            None | Some("*") => QueueSelection::All,
            Some(q) => QueueSelection::Named(q.to_string()),
        }
    }

    /// The schema its tables are read in.
    pub fn schema(&self) -> &str {
        match (&self.schema, &self.library) {
            (Some(s), _) => s,
            (None, Some(l)) => l.default_schema(),
            (None, None) => "public",
        }
    }

    /// The `library` label of its series: the library, `table` or `query`.
    pub fn library_label(&self) -> &'static str {
        match self.kind() {
            Some(TargetKind::Library(l)) => l.as_str(),
            Some(TargetKind::Table(_)) => "table",
            Some(TargetKind::Query(_)) | None => "query",
        }
    }

    /// Checks the block (`at` names it) for `measure`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self, at: &str, measure: Measure) -> Result<(), ConfigError> {
        let Some(kind) = self.kind() else {
            return Err(ConfigError::invalid(
                at,
                "needs exactly one of library (a job library's queue), table (a table described by conditions) or query (a read-only query)",
            ));
        };
        if let Some(s) = &self.schema
            && !is_plain_identifier(s)
        {
            return Err(ConfigError::invalid(format!("{at}.schema"), not_plain(s)));
        }
        if self.queue.as_deref().is_some_and(|q| q.contains('\0')) {
            return Err(ConfigError::invalid(
                format!("{at}.queue"),
                "must not hold a NUL byte",
            ));
        }
        match kind {
            TargetKind::Library(l) => {
                job_library_measure(measure, l.as_str()).map_err(|e| ConfigError::invalid(at, e))
            }
            TargetKind::Table(t) => t.validate(&format!("{at}.table"), measure),
            TargetKind::Query(q) => {
                if self.schema.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{at}.schema"),
                        "a query names its own tables",
                    ));
                }
                if self.queues() != QueueSelection::All {
                    return Err(ConfigError::invalid(
                        format!("{at}.queue"),
                        "a query chooses its own rows: select one queue in its WHERE, or return a queue column for a series per queue",
                    ));
                }
                validate_query(q).map_err(|e| ConfigError::invalid(format!("{at}.query"), e))
            }
        }
    }
}

fn not_plain(s: &str) -> String {
    format!(
        "{s:?} is not a plain identifier (lowercase letters, digits and _, not starting with a digit, at most 63 bytes)"
    )
}

impl TableSpec {
    /// The conditions of `measure`'s rows, where the table has them.
    pub fn conditions(&self, measure: Measure) -> Option<&[Condition]> {
        match measure {
            Measure::Length | Measure::OldestAgeSeconds => Some(&self.ready),
            Measure::InFlight => self.in_flight.as_deref(),
            Measure::Delayed => self.delayed.as_deref(),
            Measure::Failed => self.failed.as_deref(),
            _ => None,
        }
    }

    fn validate(&self, at: &str, measure: Measure) -> Result<(), ConfigError> {
        let columns = std::iter::once(("name", &self.name))
            .chain(self.queue_column.iter().map(|c| ("queue_column", c)))
            .chain(self.time_column.iter().map(|c| ("time_column", c)));
        for (field, c) in columns {
            if !is_plain_identifier(c) {
                return Err(ConfigError::invalid(format!("{at}.{field}"), not_plain(c)));
            }
        }
        if let Some(z) = &self.time_zone
            && z != "UTC"
        {
            return Err(ConfigError::invalid(
                format!("{at}.time_zone"),
                format!("{z:?}: only UTC is read (a timestamp without time zone holding UTC)"),
            ));
        }
        let sets = [
            ("ready", Some(&self.ready)),
            ("in_flight", self.in_flight.as_ref()),
            ("delayed", self.delayed.as_ref()),
            ("failed", self.failed.as_ref()),
        ];
        for (field, set) in sets {
            let Some(set) = set else { continue };
            if set.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.{field}"),
                    "needs at least one condition (every row matching is not a queue)",
                ));
            }
            for (i, c) in set.iter().enumerate() {
                c.validate()
                    .map_err(|e| ConfigError::invalid(format!("{at}.{field}[{i}]"), e))?;
            }
        }
        if self.conditions(measure).is_none() {
            let field = match measure {
                Measure::InFlight => "in_flight",
                Measure::Delayed => "delayed",
                Measure::Failed => "failed",
                _ => {
                    return Err(ConfigError::invalid(
                        at,
                        format!(
                            "measure {measure} is not read from a table: length, oldest_age_seconds, in_flight, delayed and failed are"
                        ),
                    ));
                }
            };
            return Err(ConfigError::invalid(
                at,
                format!("measure {measure} needs the table's `{field}` conditions"),
            ));
        }
        if measure == Measure::OldestAgeSeconds && self.time_column.is_none() {
            return Err(ConfigError::invalid(
                at,
                "oldest_age_seconds needs time_column (when each row became ready)",
            ));
        }
        Ok(())
    }
}

impl Condition {
    fn validate(&self) -> Result<(), String> {
        if !is_plain_identifier(&self.column) {
            return Err(format!("column: {}", not_plain(&self.column)));
        }
        let tests = [
            self.equals.is_some(),
            self.one_of.is_some(),
            self.is_null.is_some(),
            self.not_after_now.is_some(),
        ];
        if tests.iter().filter(|t| **t).count() != 1 {
            return Err("needs exactly one of equals, in, is_null, not_after_now".into());
        }
        if self.one_of.as_ref().is_some_and(Vec::is_empty) {
            return Err("in: needs at least one value".into());
        }
        let texts = self.equals.iter().chain(self.one_of.iter().flatten());
        for l in texts {
            if let Literal::Text(t) = l
                && t.contains('\0')
            {
                return Err("a value must not hold a NUL byte".into());
            }
        }
        Ok(())
    }
}

/// Functions a user's query may not call: they act beyond its `READ ONLY` transaction
/// (session advisory locks, a session setting such as `default_transaction_read_only`, signals
/// to other sessions).
const REFUSED_IN_QUERIES: &[&str] = &[
    "advisory",
    "set_config",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_notify",
    "dblink",
    "lo_",
];

/// Checks a user's query: one statement (it runs as a subquery), no function in
/// `REFUSED_IN_QUERIES`.
///
/// # Errors
/// The message naming what is refused.
pub fn validate_query(q: &str) -> Result<(), String> {
    if q.trim().is_empty() {
        return Err("is empty".into());
    }
    if q.contains('\0') {
        return Err("must not hold a NUL byte".into());
    }
    if q.trim_end().trim_end_matches(';').contains(';') {
        return Err("one statement only (it runs as a subquery in a READ ONLY transaction)".into());
    }
    let lower = q.to_lowercase();
    if let Some(f) = REFUSED_IN_QUERIES.iter().find(|f| lower.contains(*f)) {
        return Err(format!(
            "calls {f}..., which acts beyond its read-only transaction: not run"
        ));
    }
    Ok(())
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
        for (url, host, port) in [
            ("postgres://[::1]:6432/app", "::1", 6432),
            ("postgres://[::1]/app", "::1", DEFAULT_PORT),
            ("postgres://db/app", "db", DEFAULT_PORT),
        ] {
            let e = conn(&format!("url: \"{url}\"")).endpoint().expect(url);
            assert_eq!((e.host.as_str(), e.port), (host, port), "{url}");
            assert!(e.to_string().contains(&format!(":{port}/app")), "{e}");
        }
        assert!(conn("url: \"postgres://[::1/app\"").endpoint().is_err());
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
        let both: PostgresTarget =
            yaml_serde::from_str("library: oban\nquery: select 1 as value").expect("t");
        assert!(both.validate("m", Measure::Length).is_err());
    }

    #[test]
    fn a_table_is_described_by_plain_identifiers_and_one_test_per_condition() {
        let t = |yaml: &str| yaml_serde::from_str::<PostgresTarget>(yaml).expect(yaml);
        let ok = t(
            "table: {name: jobs, queue_column: queue, time_column: created_at, ready: [{column: state, equals: ready}, {column: run_at, not_after_now: true}], in_flight: [{column: state, in: [running, 3]}]}",
        );
        assert!(ok.validate("m", Measure::Length).is_ok());
        assert!(ok.validate("m", Measure::OldestAgeSeconds).is_ok());
        assert!(ok.validate("m", Measure::InFlight).is_ok());
        let err = ok
            .validate("m", Measure::Failed)
            .expect_err("no failed conditions");
        assert!(err.to_string().contains("`failed`"), "{err}");
        for bad in [
            "table: {name: 'jobs; drop', ready: [{column: a, is_null: true}]}",
            "table: {name: jobs, ready: []}",
            "table: {name: jobs, ready: [{column: a, is_null: true, equals: 1}]}",
            "table: {name: jobs, ready: [{column: A, is_null: true}]}",
            "table: {name: jobs, time_zone: Europe/Berlin, ready: [{column: a, is_null: true}]}",
        ] {
            assert!(t(bad).validate("m", Measure::Length).is_err(), "{bad}");
        }
        let no_time = t("table: {name: jobs, ready: [{column: a, is_null: true}]}");
        assert!(no_time.validate("m", Measure::OldestAgeSeconds).is_err());
    }

    #[test]
    fn a_query_is_one_statement_calling_nothing_that_outlives_its_transaction() {
        assert!(validate_query("select queue, count(*) as value from jobs group by 1;").is_ok());
        for bad in [
            "",
            "select 1 as value; delete from jobs",
            "select pg_advisory_lock(1) as value",
            "SELECT pg_terminate_backend(42) AS value",
        ] {
            assert!(validate_query(bad).is_err(), "{bad}");
        }
    }
}
