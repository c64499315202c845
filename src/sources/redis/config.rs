//! The `redis:` blocks of the configuration: the connection (under `sources`) and what a metric
//! reads (under `metrics`). Validation here knows which measure fits which key type.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::apimachinery::label::validate_key;
use crate::primitives::{ConfigError, HumanDuration};
use crate::sources::credentials::Credentials;
use crate::sources::field_group::{self, Grouped};
use crate::sources::measure::{Measure, job_library_measure};

/// The label a pattern series carries with the part of the key its wildcards matched.
pub const DEFAULT_KEY_LABEL: &str = "queue";
/// The label every Redis series carries with its full key, served encoded where it is not a
/// valid label value (`queue:emb` has a colon: [`crate::apimachinery::label::encode_value`]).
pub const KEY_LABEL_FULL: &str = "key";

/// A Redis connection (`sources.<name>.redis`): one server (`url`), a Sentinel-managed master
/// (`sentinel`) or a Redis Cluster (`cluster`); exactly one of the three.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct RedisSourceConfig {
    /// One server: `redis://host:port/db` or `rediss://` for TLS. A password written in the URL
    /// works but prefer `password_file`/`password_env`; the URL is never logged with it.
    #[serde(default)]
    pub url: Option<String>,
    /// A master found through Redis Sentinel.
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
    /// A Redis Cluster, found from its seed nodes.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// With `sentinel` or `cluster`: connect to every node (and sentinel) over TLS. With `url`
    /// the scheme decides (`rediss://`).
    #[serde(default)]
    pub tls: bool,
    /// Database number; overrides the one in the URL. A cluster has only database 0.
    #[serde(default)]
    pub db: Option<i64>,
    /// The data nodes' `username` (an ACL user, Redis 6+), `password_file` (a mounted Secret,
    /// re-read on every reconnect, so a token a sidecar refreshes, ElastiCache IAM or Entra
    /// ID, is picked up) or `password_env`.
    #[serde(skip)]
    pub credentials: Credentials,
    /// PEM file of the CA that signed the servers' certificates (`rediss://` or `tls: true`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Overrides the global `poll_interval` for this source.
    #[serde(default)]
    pub poll_interval: Option<HumanDuration>,
    /// Overrides the global `poll_timeout` for this source.
    #[serde(default)]
    pub poll_timeout: Option<HumanDuration>,
    /// Polling at once when a key changes (`CLIENT TRACKING`).
    #[serde(default)]
    pub wake: WakeConfig,
    /// `drain_seconds` served when work waits and nothing finished in the window. Default
    /// 86400 (1 day), as RabbitMQ's.
    #[serde(default)]
    pub max_drain_seconds: Option<f64>,
}

impl<'de> Grouped<'de> for RedisSourceConfig {
    type Group = Credentials;
    const NAME: &'static str = "RedisSourceConfig";
    const FIELDS: &'static [&'static str] = &[
        "url",
        "sentinel",
        "cluster",
        "tls",
        "db",
        "username",
        "password_file",
        "password_env",
        "ca_file",
        "poll_interval",
        "poll_timeout",
        "wake",
        "max_drain_seconds",
    ];

    fn deserialize_own<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RedisSourceConfig::deserialize(d)
    }

    fn set_group(&mut self, group: Credentials) {
        self.credentials = group;
    }
}

impl<'de> Deserialize<'de> for RedisSourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        field_group::deserialize(d)
    }
}

pub use crate::wake::WakeConfig;

/// Where a Sentinel-managed source reads (`sentinel.read_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// The master: values are exact.
    #[default]
    Master,
    /// A replica that is connected to the current master: values lag the master by the
    /// replication delay (usually milliseconds), and take read load off the master.
    Replica,
}

/// Redis Sentinel (`sources.<name>.redis.sentinel`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct SentinelConfig {
    /// The sentinels, `host:port` (port 26379 by convention); asked in order.
    pub addresses: Vec<String>,
    /// The master's name in the sentinels' configuration (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// The sentinels' own `username`, `password_file` or `password_env` (`requirepass` in
    /// sentinel.conf), when they require one.
    #[serde(skip)]
    pub credentials: Credentials,
    /// `master` (default) or `replica`.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How long one sentinel may take to answer (see [`node_timeout`]).
    #[serde(default)]
    pub node_timeout: Option<HumanDuration>,
}

impl<'de> Grouped<'de> for SentinelConfig {
    type Group = Credentials;
    const NAME: &'static str = "SentinelConfig";
    const FIELDS: &'static [&'static str] = &[
        "addresses",
        "master_name",
        "username",
        "password_file",
        "password_env",
        "read_from",
        "node_timeout",
    ];

    fn deserialize_own<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SentinelConfig::deserialize(d)
    }

    fn set_group(&mut self, group: Credentials) {
        self.credentials = group;
    }
}

impl<'de> Deserialize<'de> for SentinelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        field_group::deserialize(d)
    }
}

/// Redis Cluster (`sources.<name>.redis.cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Seed nodes, `host:port`: any reachable one tells the rest (`CLUSTER SLOTS`). A managed
    /// service's configuration or discovery endpoint is one seed.
    pub nodes: Vec<String>,
    /// How long one node may take for its part of a poll (see [`node_timeout`]).
    #[serde(default)]
    pub node_timeout: Option<HumanDuration>,
}

/// The share of `poll_timeout` one node (a Cluster node, a sentinel) gets by default: a
/// quarter, so that a poll in which a node hangs (one deadline) still has room for the other
/// steps that can each meet a node for the first time in that poll (the slot map, a redirect,
/// the second round trip) before `poll_timeout` fails it whole.
pub const NODE_TIMEOUT_SHARE: u32 = 4;

/// One node's deadline within a poll: `configured`, else a quarter of `poll_timeout`.
pub fn node_timeout(configured: Option<HumanDuration>, poll_timeout: Duration) -> Duration {
    configured.map_or(poll_timeout / NODE_TIMEOUT_SHARE, |d| d.0)
}

/// Refuses a `node_timeout` that is zero or leaves a poll no room for anything else (more than
/// half of `poll_timeout`).
fn validate_node_timeout(
    at: &str,
    configured: Option<HumanDuration>,
    poll_timeout: Duration,
) -> Result<(), ConfigError> {
    let Some(d) = configured else {
        return Ok(());
    };
    if d.0.is_zero() || d.0 > poll_timeout / 2 {
        return Err(ConfigError::invalid(
            at,
            format!(
                "must be more than 0 and at most half of poll_timeout ({poll_timeout:?}): a node that hangs costs a poll this long, and the rest of the poll must still fit"
            ),
        ));
    }
    Ok(())
}

impl std::fmt::Debug for RedisSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSourceConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .field("tls", &self.tls)
            .field("db", &self.db)
            .field("credentials", &self.credentials)
            .field("ca_file", &self.ca_file)
            .field("wake", &self.wake)
            .field("max_drain_seconds", &self.max_drain_seconds)
            .finish()
    }
}

/// A `host:port` as written in `sentinel.addresses` or `cluster.nodes` (IPv6 in brackets).
///
/// # Errors
/// When it has no port or the port is not a number.
pub fn host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} needs a port (host:port)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{address:?} has no host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{address:?}: {port:?} is not a port"))?;
    Ok((host.to_string(), port))
}

impl RedisSourceConfig {
    /// The drain time served for waiting work that nothing finishes.
    pub fn max_drain_seconds(&self) -> f64 {
        self.max_drain_seconds
            .unwrap_or(crate::sources::rates::DEFAULT_MAX_DRAIN_SECONDS)
    }

    pub(crate) fn validate(&self, at: &str, poll_timeout: Duration) -> Result<(), ConfigError> {
        let given = [
            self.url.is_some(),
            self.sentinel.is_some(),
            self.cluster.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ConfigError::invalid(
                at,
                "give exactly one of url (one server), sentinel (a Sentinel-managed master) or cluster (Redis Cluster)",
            ));
        }
        let addresses = |field: &str, list: &[String]| -> Result<(), ConfigError> {
            if list.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.{field}"),
                    "must name at least one host:port",
                ));
            }
            for a in list {
                host_port(a).map_err(|e| ConfigError::invalid(format!("{at}.{field}"), e))?;
            }
            Ok(())
        };
        if let Some(url) = &self.url {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("redis" | "rediss")) {
                return Err(ConfigError::invalid(
                    format!("{at}.url"),
                    format!(
                        "{:?} must start with redis:// or rediss://",
                        redact_url(url)
                    ),
                ));
            }
            redis::Client::open(url.as_str()).map_err(|e| {
                ConfigError::invalid(
                    format!("{at}.url"),
                    format!("{:?} is not a valid Redis URL: {e}", redact_url(url)),
                )
            })?;
            if self.ca_file.is_some() && scheme != Some("rediss") {
                return Err(ConfigError::invalid(
                    format!("{at}.ca_file"),
                    "only applies to rediss:// URLs (or tls: true with sentinel or cluster)",
                ));
            }
            if self.tls {
                return Err(ConfigError::invalid(
                    format!("{at}.tls"),
                    "applies to sentinel and cluster; with url, use rediss:// for TLS",
                ));
            }
        } else if self.ca_file.is_some() && !self.tls {
            return Err(ConfigError::invalid(
                format!("{at}.ca_file"),
                "only applies with tls: true",
            ));
        }
        if let Some(s) = &self.sentinel {
            addresses("sentinel.addresses", &s.addresses)?;
            if s.master_name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.sentinel.master_name"),
                    "must not be empty",
                ));
            }
            validate_node_timeout(
                &format!("{at}.sentinel.node_timeout"),
                s.node_timeout,
                poll_timeout,
            )?;
        }
        if let Some(c) = &self.cluster {
            addresses("cluster.nodes", &c.nodes)?;
            validate_node_timeout(
                &format!("{at}.cluster.node_timeout"),
                c.node_timeout,
                poll_timeout,
            )?;
            if self.db.is_some_and(|db| db != 0) {
                return Err(ConfigError::invalid(
                    format!("{at}.db"),
                    "Redis Cluster has only database 0",
                ));
            }
        }
        if let Some(d) = self.max_drain_seconds
            && !(d.is_finite() && d > 0.0)
        {
            return Err(ConfigError::invalid(
                format!("{at}.max_drain_seconds"),
                "must be a positive number",
            ));
        }
        self.wake.validate(&format!("{at}.wake"))?;
        if let Some(db) = self.db
            && db < 0
        {
            return Err(ConfigError::invalid(
                format!("{at}.db"),
                "must not be negative",
            ));
        }
        Ok(())
    }

    pub(crate) fn resolve_secrets(&mut self, at: &str) -> Result<(), ConfigError> {
        self.credentials.resolve(at)?;
        if let Some(s) = &mut self.sentinel {
            s.credentials.resolve(&format!("{at}.sentinel"))?;
        }
        Ok(())
    }

    /// The password files this connection reads: the data nodes' and the sentinels'.
    pub fn password_files(&self) -> Vec<PathBuf> {
        let sentinels = self.sentinel.iter().map(|s| &s.credentials);
        std::iter::once(&self.credentials)
            .chain(sentinels)
            .filter_map(|c| c.password_file.clone())
            .collect()
    }

    /// How the source is named in messages: its URL (password redacted), or its sentinels and
    /// master, or its seed nodes.
    pub fn display(&self) -> String {
        match (&self.url, &self.sentinel, &self.cluster) {
            (Some(url), _, _) => redact_url(url),
            (_, Some(s), _) => format!(
                "sentinel master {:?} via {}",
                s.master_name,
                s.addresses.join(",")
            ),
            (_, _, Some(c)) => format!("cluster via {}", c.nodes.join(",")),
            _ => "redis".to_string(),
        }
    }
}

pub use crate::primitives::redact_url;

/// Which Redis type a metric reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// A list used as a queue (Sidekiq, RQ, BullMQ `wait`, Celery/kombu).
    List,
    /// A stream, optionally read through a consumer group.
    Stream,
    /// A sorted set scored by run-at time (delay and retry queues).
    Zset,
    /// A hash counted by its fields (Celery's `unacked`): `length` only.
    Hash,
    /// A set counted by its members (bee-queue's `failed`): `length` only.
    Set,
    /// A counter (`INCR`, Sidekiq's `stat:processed`, BullMQ's `:id`): its rate over the
    /// metric's `window` (`arrival_rate` or `completion_rate`, as the counter counts).
    String,
}

impl KeyType {
    /// The name Redis' `TYPE` and `SCAN ... TYPE` use.
    pub fn redis_name(self) -> &'static str {
        match self {
            KeyType::List => "list",
            KeyType::Stream => "stream",
            KeyType::Zset => "zset",
            KeyType::Hash => "hash",
            KeyType::Set => "set",
            KeyType::String => "string",
        }
    }

    /// Whether Redis deletes a key of this type when its last element goes (lists and sorted
    /// sets), so that a missing key is an empty queue. A stream is never deleted by Redis
    /// itself: a missing stream is a typo, the wrong `db`, or a deliberate `DEL`.
    pub fn deleted_when_empty(self) -> bool {
        !matches!(self, KeyType::Stream | KeyType::String)
    }

    fn measures(self) -> &'static [Measure] {
        match self {
            KeyType::List => &[Measure::Length, Measure::OldestAgeSeconds],
            KeyType::Stream => &[
                Measure::Length,
                Measure::Lag,
                Measure::Pending,
                Measure::OldestPendingAgeSeconds,
                Measure::OldestUnprocessedAgeSeconds,
                Measure::ArrivalRate,
                Measure::CompletionRate,
                Measure::DrainSeconds,
                Measure::WorkersNeeded,
            ],
            KeyType::Zset => &[
                Measure::Length,
                Measure::Ready,
                Measure::OldestAgeSeconds,
                Measure::InFlight,
            ],
            KeyType::Hash => &[
                Measure::Length,
                Measure::ArrivalRate,
                Measure::CompletionRate,
            ],
            KeyType::Set => &[Measure::Length],
            KeyType::String => &[Measure::ArrivalRate, Measure::CompletionRate],
        }
    }
}

/// Which end of a list holds the oldest element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListEnd {
    /// Index 0: producers `RPUSH`, consumers pop from the left (RQ).
    Head,
    /// Index -1: producers `LPUSH`, consumers pop from the right (Sidekiq, BullMQ, Celery).
    Tail,
}

/// How a timestamp value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Seconds since the Unix epoch, integer or fractional (Sidekiq ≤ 7).
    S,
    /// Milliseconds since the Unix epoch (Sidekiq 8, BullMQ).
    Ms,
    /// An RFC 3339 date-time (RQ's `2026-11-22T01:29:49.000000Z`).
    Rfc3339,
    /// Sidekiq's `enqueued_at` across versions, told apart as Sidekiq's own reader does: a
    /// number written with a fraction is epoch seconds (up to 7.x, `Time.now.to_f`), one
    /// without is epoch milliseconds (8.x, `CLOCK_REALTIME` ms).
    Sidekiq,
}

/// How a sorted set's scores encode run-at times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScoreUnit {
    /// Seconds since the epoch (Sidekiq `schedule`/`retry`, RQ `scheduled`).
    #[default]
    S,
    /// Milliseconds since the epoch.
    Ms,
    /// BullMQ `delayed`: milliseconds × 4096 + a counter.
    Bullmq,
}

/// Where a list element's enqueue time is found: inside the element (`json_pointer`), in a
/// hash the element names (`hash` with `{id}` + `field`), or inside the JSON a fixed hash keeps
/// under the element as its field (`hash` without `{id}` + `json_pointer`: dramatiq's
/// `dramatiq:<q>.msgs`, bee-queue's `bq:<q>:jobs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampSpec {
    /// RFC 6901 pointer into the element's JSON (`/enqueued_at`), or, with a `hash` without
    /// `{id}`, into the JSON that hash holds under the element.
    #[serde(default)]
    pub json_pointer: Option<String>,
    /// Hash key template: `{key}` is the list's key; `{id}`, the element, makes it a hash per
    /// element (RQ `rq:job:{id}`, BullMQ `bull:embed:{id}`), read at `field`; without `{id}`
    /// one hash keeps every element's JSON under the element (`{key}.msgs`), read at
    /// `json_pointer`. Costs a second round trip.
    #[serde(default)]
    pub hash: Option<String>,
    /// With a hash per element: the field holding the time (RQ `enqueued_at`, BullMQ
    /// `timestamp`).
    #[serde(default)]
    pub field: Option<String>,
    /// How the time is written.
    pub unit: TimeUnit,
}

/// What a metric reads (`metrics[].redis`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTarget {
    /// The key's type.
    #[serde(rename = "type")]
    pub key_type: KeyType,
    /// One exact key.
    #[serde(default)]
    pub key: Option<String>,
    /// A `SCAN MATCH` glob (`queue:*`): one series per matching key of `type`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// With `pattern`: the label that carries what the wildcards matched. Default `queue`.
    #[serde(default)]
    pub key_label: Option<String>,
    /// Lists: which end is oldest. Default `tail` (LPUSH producers).
    #[serde(default)]
    pub oldest_at: Option<ListEnd>,
    /// Lists: where the enqueue time is, for `oldest_age_seconds`.
    #[serde(default)]
    pub timestamp: Option<TimestampSpec>,
    /// Lists: Celery/kombu priority steps whose sub-lists (`<key>\x06\x16<step>`) are read with
    /// the list and summed (kombu's default is `[3, 6, 9]`).
    #[serde(default)]
    pub kombu_priority_steps: Option<Vec<u32>>,
    /// Streams: the consumer group, for `lag`, `pending` and the ages.
    #[serde(default)]
    pub group: Option<String>,
    /// Sorted sets: how scores encode time. Default `s`.
    #[serde(default)]
    pub score_unit: Option<ScoreUnit>,
    /// Lists: other keys holding jobs of the same queue (BullMQ's `prioritized` sorted set and
    /// `paused` list), summed into `length`; `oldest_age_seconds` is the oldest across them.
    /// A sorted set's members are read as the list's elements are (job ids, aged through
    /// `timestamp`), at most [`MAX_MEMBERS_AGED`] of them. With `pattern`, `{match}` in a key
    /// is what the pattern's wildcards matched.
    #[serde(default)]
    pub also: Vec<AlsoKey>,
    /// Sorted sets of job ids: a key template with `{id}` whose key exists while that job is
    /// being run (arq's `arq:in-progress:{id}`). Such members are not waiting: `ready` and
    /// `oldest_age_seconds` leave them out, and `in_flight` counts them, among the
    /// [`MAX_MEMBERS_AGED`] lowest-scored members.
    #[serde(default)]
    pub in_progress: Option<String>,
    /// Hashes: the field holding a counter, for `arrival_rate` and `completion_rate`
    /// (BullMQ's `bull:<q>:metrics:completed` keeps it in `count`).
    #[serde(default)]
    pub field: Option<String>,
}

/// Most members of an `also` sorted set whose times are looked up for `oldest_age_seconds`:
/// its order is not enqueue order (BullMQ scores by priority), so every member is read, and
/// a larger set is an error rather than an age from part of it.
pub const MAX_MEMBERS_AGED: usize = 1000;

/// One more key of a queue (`metrics[].redis.also[]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlsoKey {
    /// `list` or `zset`.
    #[serde(rename = "type")]
    pub key_type: KeyType,
    /// The key; `{match}` with a `pattern`.
    pub key: String,
}

impl RedisTarget {
    /// A target reading one exact key of `key_type`, every option at its default: what the
    /// job-library presets start from.
    pub fn exact(key_type: KeyType, key: impl Into<String>) -> RedisTarget {
        RedisTarget {
            key_type,
            key: Some(key.into()),
            pattern: None,
            key_label: None,
            oldest_at: None,
            timestamp: None,
            kombu_priority_steps: None,
            group: None,
            score_unit: None,
            also: Vec::new(),
            in_progress: None,
            field: None,
        }
    }

    /// The label carrying a pattern match's wildcard part.
    pub fn key_label(&self) -> &str {
        self.key_label.as_deref().unwrap_or(DEFAULT_KEY_LABEL)
    }

    pub(crate) fn validate(
        &self,
        at: &str,
        measure: Measure,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        let kt = self.key_type.redis_name();
        match (&self.key, &self.pattern) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    at,
                    "give either key or pattern, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    at,
                    "needs key (one exact key) or pattern (a SCAN glob)",
                ));
            }
            (Some(k), None) if k.is_empty() => {
                return Err(ConfigError::invalid(
                    format!("{at}.key"),
                    "must not be empty",
                ));
            }
            (None, Some(p)) if !p.contains(['*', '?', '[']) => {
                return Err(ConfigError::invalid(
                    format!("{at}.pattern"),
                    format!("{p:?} has no wildcard; use key for one exact key"),
                ));
            }
            _ => {}
        }
        if measure == Measure::WorkersNeeded && self.pattern.is_some() {
            return Err(ConfigError::invalid(
                format!("{at}.pattern"),
                "workers_needed is about one queue and the workload that runs it: give key",
            ));
        }
        if self.key_label.is_some() && self.pattern.is_none() {
            return Err(ConfigError::invalid(
                format!("{at}.key_label"),
                "only applies with pattern",
            ));
        }
        if self.pattern.is_some() {
            let label = self.key_label();
            validate_key(label).map_err(|e| {
                ConfigError::invalid(format!("{at}.key_label"), format!("{label:?} {e}"))
            })?;
        }
        for reserved in [
            Some(KEY_LABEL_FULL),
            self.pattern.as_ref().map(|_| self.key_label()),
        ]
        .into_iter()
        .flatten()
        {
            if labels.contains_key(reserved) {
                return Err(ConfigError::invalid(
                    at,
                    format!(
                        "the metric's labels must not set {reserved:?}: every series gets it from its key"
                    ),
                ));
            }
        }
        let counts = measure.is_counter_rate()
            || matches!(measure, Measure::DrainSeconds | Measure::WorkersNeeded);
        if counts && matches!(self.key_type, KeyType::List | KeyType::Zset | KeyType::Set) {
            return Err(ConfigError::invalid(
                at,
                format!(
                    "measure {measure} does not apply to type {kt}: a {kt} keeps no count of the jobs that entered or left it, and a rate is never inferred from length differences; read a counter (type string, or hash with field) or a stream"
                ),
            ));
        }
        if !self.key_type.measures().contains(&measure) {
            let fits: Vec<&str> = self
                .key_type
                .measures()
                .iter()
                .map(|m| m.as_str())
                .collect();
            return Err(ConfigError::invalid(
                at,
                format!("measure {measure} does not apply to type {kt}; a {kt} has {fits:?}"),
            ));
        }
        let only_for = |field: &str, set: bool, ty: KeyType| -> Result<(), ConfigError> {
            if set && self.key_type != ty {
                return Err(ConfigError::invalid(
                    format!("{at}.{field}"),
                    format!("only applies to type {}, not {kt}", ty.redis_name()),
                ));
            }
            Ok(())
        };
        only_for("oldest_at", self.oldest_at.is_some(), KeyType::List)?;
        only_for("timestamp", self.timestamp.is_some(), KeyType::List)?;
        only_for(
            "kombu_priority_steps",
            self.kombu_priority_steps.is_some(),
            KeyType::List,
        )?;
        only_for("group", self.group.is_some(), KeyType::Stream)?;
        only_for("score_unit", self.score_unit.is_some(), KeyType::Zset)?;
        if self.key_type == KeyType::List
            && measure == Measure::OldestAgeSeconds
            && self.timestamp.is_none()
        {
            return Err(ConfigError::invalid(
                at,
                "oldest_age_seconds on a list needs timestamp (json_pointer, or hash + field) to find the enqueue time",
            ));
        }
        if self.key_type == KeyType::Stream
            && !matches!(measure, Measure::Length | Measure::ArrivalRate)
            && self.group.is_none()
        {
            return Err(ConfigError::invalid(
                at,
                format!("measure {measure} needs group (the consumer group)"),
            ));
        }
        if let Some(ts) = &self.timestamp {
            let at = format!("{at}.timestamp");
            match (&ts.json_pointer, &ts.hash, &ts.field) {
                (Some(p), None, None) => {
                    if !(p.is_empty() || p.starts_with('/')) {
                        return Err(ConfigError::invalid(
                            format!("{at}.json_pointer"),
                            format!("{p:?} must start with '/' (RFC 6901), e.g. /enqueued_at"),
                        ));
                    }
                }
                (None, Some(h), Some(f)) => {
                    if !h.contains("{id}") {
                        return Err(ConfigError::invalid(
                            format!("{at}.hash"),
                            format!(
                                "{h:?} must contain {{id}}, replaced by the list element (e.g. rq:job:{{id}})"
                            ),
                        ));
                    }
                    if f.is_empty() {
                        return Err(ConfigError::invalid(
                            format!("{at}.field"),
                            "must not be empty",
                        ));
                    }
                }
                (Some(p), Some(h), None) => {
                    if h.contains("{id}") {
                        return Err(ConfigError::invalid(
                            format!("{at}.hash"),
                            format!(
                                "{h:?} names a hash per element: give field (the field holding the time), not json_pointer"
                            ),
                        ));
                    }
                    if !p.starts_with('/') {
                        return Err(ConfigError::invalid(
                            format!("{at}.json_pointer"),
                            format!(
                                "{p:?} must start with '/' (RFC 6901), e.g. /message_timestamp"
                            ),
                        ));
                    }
                }
                (None, Some(h), None) => {
                    return Err(ConfigError::invalid(
                        at,
                        if h.contains("{id}") {
                            "hash needs field (e.g. enqueued_at)"
                        } else {
                            "a hash without {id} keeps each element's JSON under the element: give json_pointer (e.g. /message_timestamp)"
                        },
                    ));
                }
                _ => {
                    return Err(ConfigError::invalid(
                        at,
                        "give json_pointer (time inside the element), hash with {id} + field (time in a hash the element names), or hash without {id} + json_pointer (time in the JSON a hash keeps under the element)",
                    ));
                }
            }
        }
        only_for("field", self.field.is_some(), KeyType::Hash)?;
        match (&self.field, self.key_type, measure.is_counter_rate()) {
            (None, KeyType::Hash, true) => {
                return Err(ConfigError::invalid(
                    at,
                    format!(
                        "measure {measure} on a hash needs field (the field holding the counter)"
                    ),
                ));
            }
            (Some(_), _, false) => {
                return Err(ConfigError::invalid(
                    format!("{at}.field"),
                    "only applies to arrival_rate and completion_rate (the field holding a counter)",
                ));
            }
            (Some(f), _, true) if f.is_empty() => {
                return Err(ConfigError::invalid(
                    format!("{at}.field"),
                    "must not be empty",
                ));
            }
            _ => {}
        }
        // A counter's `also` keys are more counters of its type, summed (BullMQ's completed
        // and failed counts).
        let counter =
            measure.is_counter_rate() && matches!(self.key_type, KeyType::String | KeyType::Hash);
        for (i, also) in self.also.iter().enumerate() {
            let at = format!("{at}.also[{i}]");
            if counter {
                if also.key_type != self.key_type {
                    return Err(ConfigError::invalid(
                        format!("{at}.type"),
                        format!("must be {kt}, like the counter it is added to"),
                    ));
                }
            } else if !matches!(also.key_type, KeyType::List | KeyType::Zset) {
                return Err(ConfigError::invalid(
                    format!("{at}.type"),
                    "must be list or zset (the keys a queue's jobs wait in)",
                ));
            }
            if also.key.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.key"),
                    "must not be empty",
                ));
            }
            if also.key.contains("{match}") && self.pattern.is_none() {
                return Err(ConfigError::invalid(
                    format!("{at}.key"),
                    "{match} only applies with pattern (it is what the wildcards matched)",
                ));
            }
        }
        if !counter {
            only_for("also", !self.also.is_empty(), KeyType::List)?;
        }
        only_for("in_progress", self.in_progress.is_some(), KeyType::Zset)?;
        if let Some(t) = &self.in_progress
            && !t.contains("{id}")
        {
            return Err(ConfigError::invalid(
                format!("{at}.in_progress"),
                format!(
                    "{t:?} must contain {{id}}, replaced by each member (e.g. arq:in-progress:{{id}})"
                ),
            ));
        }
        if measure == Measure::InFlight && self.in_progress.is_none() {
            return Err(ConfigError::invalid(
                at,
                "measure in_flight on a sorted set needs in_progress (the key that marks a member being run)",
            ));
        }
        if let Some(steps) = &self.kombu_priority_steps
            && steps.is_empty()
        {
            return Err(ConfigError::invalid(
                format!("{at}.kombu_priority_steps"),
                "must not be empty; kombu's default is [3, 6, 9]",
            ));
        }
        Ok(())
    }
}

/// What a metric reads (`metrics[].redis`): keys named with the generic knobs, or a job
/// library's queue (`{library: bullmq, queue: embed}`), told apart by the `library` field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisMetric {
    /// Keys, their types and where their times are (boxed: many fields, most unset).
    Keys(Box<RedisTarget>),
    /// A job library's queue: the library's own layout is read ([`crate::sources::redis::libraries`]).
    Library(LibraryTarget),
}

impl<'de> Deserialize<'de> for RedisMetric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = yaml_serde::Value::deserialize(d)?;
        let is_library = value
            .as_mapping()
            .is_some_and(|m| m.contains_key(yaml_serde::Value::from("library")));
        // The inner path (`timestamp.unit`) is kept in the message: buffering loses it otherwise.
        let located = |e: serde_path_to_error::Error<yaml_serde::Error>| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                D::Error::custom(inner)
            } else {
                D::Error::custom(format!("{path}: {inner}"))
            }
        };
        if is_library {
            serde_path_to_error::deserialize(value)
                .map(RedisMetric::Library)
                .map_err(located)
        } else {
            serde_path_to_error::deserialize(value)
                .map(|t| RedisMetric::Keys(Box::new(t)))
                .map_err(located)
        }
    }
}

impl RedisMetric {
    /// The generic target, when the metric names keys.
    pub fn keys(&self) -> Option<&RedisTarget> {
        match self {
            RedisMetric::Keys(t) => Some(t),
            RedisMetric::Library(_) => None,
        }
    }

    pub(crate) fn validate(
        &self,
        at: &str,
        measure: Measure,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        match self {
            RedisMetric::Keys(t) => t.validate(at, measure, labels),
            RedisMetric::Library(l) => l.validate(at, measure, labels),
        }
    }
}

/// A job library whose Redis layout the adapter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Library {
    /// Sidekiq (Ruby), 6.4 checked; 7 and 8 from their code.
    Sidekiq,
    /// RQ (Python), 3.0.
    Rq,
    /// Celery (Python) on kombu's Redis transport, 5.7.
    Celery,
    /// dramatiq (Python) on its Redis broker, 2.2.
    Dramatiq,
    /// arq (Python), 0.28.
    Arq,
    /// huey (Python) with its Redis list storage, 3.5.
    Huey,
    /// BullMQ (Node.js), 5.x and 6.x.
    Bullmq,
    /// bee-queue (Node.js), 2.0.
    BeeQueue,
}

impl Library {
    /// The library's name as the config and the `library` label spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Library::Sidekiq => "sidekiq",
            Library::Rq => "rq",
            Library::Celery => "celery",
            Library::Dramatiq => "dramatiq",
            Library::Arq => "arq",
            Library::Huey => "huey",
            Library::Bullmq => "bullmq",
            Library::BeeQueue => "bee-queue",
        }
    }

    /// The key prefix the library puts before a queue's keys by default, for the libraries
    /// whose prefix is a setting (BullMQ `prefix`, bee-queue `prefix`, dramatiq `namespace`).
    pub fn default_prefix(self) -> Option<&'static str> {
        match self {
            Library::Bullmq => Some("bull"),
            Library::BeeQueue => Some("bq"),
            Library::Dramatiq => Some("dramatiq"),
            Library::Sidekiq | Library::Rq | Library::Celery | Library::Arq | Library::Huey => None,
        }
    }
}

/// The labels every preset series carries besides `key`.
pub const LIBRARY_LABELS: [&str; 3] = ["library", "queue", "scope"];

/// `metrics[].redis` naming a job library's queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryTarget {
    /// `sidekiq`, `rq`, `celery`, `dramatiq`, `arq`, `huey`, `bullmq` or `bee-queue`.
    pub library: Library,
    /// A queue name, a list of them, or `*`: every queue the library's registry (or its key
    /// layout) shows.
    pub queue: QueueNames,
    /// The library's key prefix where it has one (BullMQ `prefix`, default `bull`; bee-queue
    /// `prefix`, default `bq`; dramatiq `namespace`, default `dramatiq`).
    #[serde(default)]
    pub prefix: Option<String>,
}

/// The queues a preset metric covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueNames {
    /// `*`: every queue found.
    All,
    /// The queues named.
    Named(Vec<String>),
}

impl<'de> Deserialize<'de> for QueueNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = QueueNames;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a queue name, a list of queue names, or \"*\" for every queue")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<QueueNames, E> {
                Ok(if v == "*" {
                    QueueNames::All
                } else {
                    QueueNames::Named(vec![v.to_string()])
                })
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<QueueNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(QueueNames::Named(names))
            }
        }
        d.deserialize_any(Names)
    }
}

impl LibraryTarget {
    /// The prefix in force: the configured one or the library's default (`""` where the
    /// library has none).
    pub fn prefix(&self) -> &str {
        self.prefix
            .as_deref()
            .or(self.library.default_prefix())
            .unwrap_or("")
    }

    pub(crate) fn validate(
        &self,
        at: &str,
        measure: Measure,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        let lib = self.library.as_str();
        job_library_measure(measure, lib).map_err(|e| ConfigError::invalid(at, e))?;
        if measure == Measure::WorkersNeeded
            && !matches!(&self.queue, QueueNames::Named(names) if names.len() == 1)
        {
            return Err(ConfigError::invalid(
                format!("{at}.queue"),
                "workers_needed is about one queue and the workload that runs it: name one queue",
            ));
        }
        match &self.queue {
            QueueNames::All => {}
            QueueNames::Named(names) => {
                if names.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{at}.queue"),
                        "names no queue: give a name, a list, or \"*\" for every queue",
                    ));
                }
                for name in names {
                    if name.is_empty() || name == "*" {
                        return Err(ConfigError::invalid(
                            format!("{at}.queue"),
                            format!(
                                "{name:?} is not a queue name (\"*\" stands alone, not in a list)"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(prefix) = &self.prefix {
            if self.library.default_prefix().is_none() {
                return Err(ConfigError::invalid(
                    format!("{at}.prefix"),
                    format!(
                        "{lib}'s keys take no prefix the adapter knows of (prefix applies to bullmq, bee-queue and dramatiq)"
                    ),
                ));
            }
            if prefix.is_empty() || prefix.contains(['*', '?', '[', ']', '\\']) {
                return Err(ConfigError::invalid(
                    format!("{at}.prefix"),
                    format!(
                        "{prefix:?} must be the library's prefix as set, without glob characters"
                    ),
                ));
            }
        }
        for reserved in LIBRARY_LABELS.iter().chain([&KEY_LABEL_FULL]) {
            if labels.contains_key(*reserved) {
                return Err(ConfigError::invalid(
                    at,
                    format!(
                        "the metric's labels must not set {reserved:?}: every {lib} series gets it from its queue"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::config::Config;

    /// Passwords of printable ASCII, including everything that confuses a URL reader.
    fn password() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(
                "abcXYZ0189/@:?#%&=+!$'()*,;[]~-._ \"\\"
                    .chars()
                    .collect::<Vec<_>>(),
            ),
            4..24,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn yaml_quoted(text: &str) -> String {
        text.replace('\\', "\\\\").replace('"', "\\\"")
    }

    #[test]
    fn a_password_with_a_slash_is_redacted() {
        assert_eq!(
            redact_url("redis://u:pa/ss@host:6379/0"),
            "redis://u:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://:s3cr?t@h/1"), "rediss://:***@h/1");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("u:p@h"), "u:***@h", "no scheme");
    }

    #[test]
    fn a_node_timeout_defaults_to_a_quarter_of_the_poll_and_leaves_room_for_the_rest() {
        let poll = Duration::from_secs(2);
        assert_eq!(node_timeout(None, poll), Duration::from_millis(500));
        let set = Some(HumanDuration(Duration::from_millis(300)));
        assert_eq!(node_timeout(set, poll), Duration::from_millis(300));
        let yaml = |extra: &str| {
            format!(
                "poll_timeout: 2s\nsources:\n  a:\n    redis: {{cluster: {{nodes: [\"h:7000\"]{extra}}}}}\n  b:\n    redis: {{sentinel: {{addresses: [\"h:26379\"], master_name: m{extra}}}}}\nmetrics:\n  - {{name: q, source: a, measure: length, redis: {{type: list, key: q}}}}\n  - {{name: r, source: b, measure: length, redis: {{type: list, key: q}}}}\n"
            )
        };
        Config::from_yaml(&yaml(""), Path::new("c.yaml")).expect("no node_timeout");
        Config::from_yaml(&yaml(", node_timeout: 1s"), Path::new("c.yaml")).expect("half");
        for bad in [", node_timeout: 1500ms", ", node_timeout: 0s"] {
            let e = Config::from_yaml(&yaml(bad), Path::new("c.yaml"))
                .expect_err(bad)
                .to_string();
            assert!(
                e.contains("node_timeout") && e.contains("at most half of poll_timeout"),
                "{e}"
            );
        }
    }

    proptest! {
        /// Whatever the password, neither the redacted URL, nor a config's `Debug`, nor the
        /// error that refuses the config, shows it.
        #[test]
        fn no_password_reaches_a_redacted_url_debug_output_or_config_error(
            user in "[a-z]{0,6}",
            password in password(),
            db in 0u8..16,
        ) {
            let url = format!("redis://{user}:{password}@cache.internal:6379/{db}");
            let without = format!("redis://{user}:@cache.internal:6379/{db}");
            // A password that happens to be part of the rest of the URL proves nothing.
            prop_assume!(!without.contains(&password));
            let redacted = redact_url(&url);
            prop_assert!(!redacted.contains(&password), "{redacted}");
            let yaml = format!(
                "sources:\n  jobs:\n    redis: {{url: \"{}\"}}\nmetrics:\n  - {{name: q, source: jobs, measure: length, redis: {{type: list, key: q}}}}\n",
                yaml_quoted(&url)
            );
            match Config::from_yaml(&yaml, Path::new("p.yaml")) {
                Ok(config) => {
                    let debug = format!("{config:?}");
                    prop_assert!(!debug.contains(&password), "{debug}");
                }
                Err(e) => {
                    let text = e.to_string();
                    prop_assert!(!text.contains(&password), "{text}");
                }
            }
        }
    }
}
