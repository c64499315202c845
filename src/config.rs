//! The YAML configuration: sources (connections) and metrics (what to read, how it is named).
//!
//! [`Config::load`] parses and validates in one step; a config that loads is one every other
//! module can trust (names valid and unique, every metric's source exists, every measure fits its
//! key type, secrets read). Secrets are held in [`Secret`], whose `Debug` never shows them.
//! The only I/O here is reading the config file and secret files at load.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::k8s::selector::{validate_key, validate_value};
use crate::model::validate_metric_name;
use crate::security::keda_clients::KedaClientConfig;

/// Default time between two polls of a source: 2 s, well inside the HPA's 15 s sync period.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Default limit on one poll (connect + round trips): 5 s.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default age past which a value is refused rather than served: 30 s.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(30);
/// Default ceiling of the retry delay while a source keeps failing: 10 s.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Default time between two key discoveries (`SCAN`) for pattern metrics: 30 s.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// Default time a list or sorted-set key found by a pattern stays in the poll set after Redis
/// deleted it (it emptied): 6 h, so a queue that is empty overnight keeps its series (served as
/// 0) and a job pushed into it is seen on the next poll, not the next discovery.
pub const DEFAULT_PATTERN_KEY_RETENTION: Duration = Duration::from_secs(6 * 3600);

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time between polls of each source (a source may override it). Default 2s.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Limit on one poll; a poll that takes longer fails with a timeout. Default 5s.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout: HumanDuration,
    /// Values observed longer ago than this are refused (503), not served. Default 30s.
    #[serde(default = "default_max_staleness")]
    pub max_staleness: HumanDuration,
    /// Ceiling of the retry delay while a source keeps failing. Default 10s.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// Time between key discoveries for `pattern` metrics. Default 30s.
    #[serde(default = "default_discovery_interval")]
    pub discovery_interval: HumanDuration,
    /// How long a list or sorted-set key found by a `pattern` stays polled (and served as 0)
    /// after it stopped existing. Default 6h.
    #[serde(default = "default_pattern_key_retention")]
    pub pattern_key_retention: HumanDuration,
    /// Connections, by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// What to serve.
    pub metrics: Vec<MetricConfig>,
    /// How to reach the Kubernetes API (for `dcgm` sources). Default: in-cluster, else
    /// `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// Which KEDA clients (by client certificate) may read which namespaces over gRPC; `None`:
    /// any caller reads every namespace ([`crate::security::keda_clients`]).
    #[serde(default)]
    pub keda_clients: Option<Vec<KedaClientConfig>>,
}

/// The `kubernetes:` block: only needed to run outside a cluster with a specific kubeconfig.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file to use instead of the in-cluster service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context. Default: its current context.
    #[serde(default)]
    pub context: Option<String>,
}

pub use crate::sources::{MetricTargets, SourceConfig};

/// One served metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricConfig {
    /// What the HPA names: lowercase letters, digits, `_`, `.`, `-`.
    pub name: String,
    /// Free text, shown in `/metrics` help and `check`.
    pub description: Option<String>,
    /// The name of an entry under `sources`.
    pub source: String,
    /// What to compute; which measures exist depends on the key type.
    pub measure: Measure,
    /// Labels added to every series of this metric (served as `metricLabels`).
    pub labels: BTreeMap<String, String>,
    /// Namespaces this metric is served in; absent means every namespace.
    pub namespaces: Option<Vec<String>>,
    /// What to read, in the block of its source's kind (`redis: {...}`, `rabbitmq: {...}`).
    pub targets: MetricTargets,
}

/// The fields of a metric besides the kinds' blocks.
const METRIC_FIELDS: &[&str] = &[
    "name",
    "description",
    "source",
    "measure",
    "labels",
    "namespaces",
];

impl<'de> Deserialize<'de> for MetricConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = MetricConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metric: name, source, measure and the block of its source's kind")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetricConfig, A::Error> {
                let (mut name, mut description, mut source, mut measure) = (None, None, None, None);
                let (mut labels, mut namespaces) = (None, None);
                let mut targets = MetricTargets::default();
                while let Some(key) = map.next_key::<String>()? {
                    fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
                        slot: &mut Option<T>,
                        key: &'static str,
                        map: &mut A,
                    ) -> Result<(), A::Error> {
                        if slot.is_some() {
                            return Err(A::Error::duplicate_field(key));
                        }
                        *slot = Some(map.next_value()?);
                        Ok(())
                    }
                    match key.as_str() {
                        "name" => once(&mut name, "name", &mut map)?,
                        "description" => once(&mut description, "description", &mut map)?,
                        "source" => once(&mut source, "source", &mut map)?,
                        "measure" => once(&mut measure, "measure", &mut map)?,
                        "labels" => once(&mut labels, "labels", &mut map)?,
                        "namespaces" => once(&mut namespaces, "namespaces", &mut map)?,
                        other => {
                            if !targets.read(other, &mut map)? {
                                let mut expected: Vec<&str> = METRIC_FIELDS.to_vec();
                                expected.extend(crate::sources::KINDS);
                                let expected: Vec<String> =
                                    expected.iter().map(|f| format!("`{f}`")).collect();
                                return Err(A::Error::custom(format!(
                                    "unknown field `{other}`, expected one of {}",
                                    expected.join(", ")
                                )));
                            }
                        }
                    }
                }
                Ok(MetricConfig {
                    name: name.ok_or_else(|| A::Error::missing_field("name"))?,
                    description: description.unwrap_or_default(),
                    source: source.ok_or_else(|| A::Error::missing_field("source"))?,
                    measure: measure.ok_or_else(|| A::Error::missing_field("measure"))?,
                    labels: labels.unwrap_or_default(),
                    namespaces: namespaces.unwrap_or_default(),
                    targets,
                })
            }
        }
        d.deserialize_map(Fields)
    }
}

/// What a metric computes from what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Number of entries (list `LLEN`, stream `XLEN`, sorted set `ZCARD`).
    Length,
    /// Seconds since the oldest entry was enqueued (list, sorted set).
    OldestAgeSeconds,
    /// Stream entries not yet delivered to the consumer group.
    Lag,
    /// Stream entries delivered to the group and not yet acknowledged.
    Pending,
    /// Age of the oldest delivered-but-unacknowledged stream entry.
    OldestPendingAgeSeconds,
    /// Age of the oldest stream entry the group has not finished (pending, else undelivered).
    OldestUnprocessedAgeSeconds,
    /// Sorted-set entries whose score (run-at time) has passed; RabbitMQ messages ready for delivery.
    Ready,
    /// RabbitMQ: delivered, not yet acknowledged.
    Unacked,
    /// RabbitMQ: ready + unacknowledged.
    Total,
    /// RabbitMQ: consumers attached.
    Consumers,
    /// RabbitMQ: messages published per second.
    PublishRate,
    /// RabbitMQ: messages delivered per second.
    DeliverRate,
    /// RabbitMQ: messages acknowledged per second.
    AckRate,
    /// RabbitMQ: backlog / ack rate, seconds to drain at the current pace.
    DrainSeconds,
    /// GPU utilization in percent 0–100 (engine activity, else GPU_UTIL).
    GpuUtilization,
    /// Frame buffer used / (used + free), 0–1.
    MemoryUsedRatio,
    /// Power draw in watts.
    PowerWatts,
}

impl Measure {
    /// The measure's config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Length => "length",
            Measure::OldestAgeSeconds => "oldest_age_seconds",
            Measure::Lag => "lag",
            Measure::Pending => "pending",
            Measure::OldestPendingAgeSeconds => "oldest_pending_age_seconds",
            Measure::OldestUnprocessedAgeSeconds => "oldest_unprocessed_age_seconds",
            Measure::Ready => "ready",
            Measure::Unacked => "unacked",
            Measure::Total => "total",
            Measure::Consumers => "consumers",
            Measure::PublishRate => "publish_rate",
            Measure::DeliverRate => "deliver_rate",
            Measure::AckRate => "ack_rate",
            Measure::DrainSeconds => "drain_seconds",
            Measure::GpuUtilization => "gpu_utilization",
            Measure::MemoryUsedRatio => "memory_used_ratio",
            Measure::PowerWatts => "power_watts",
        }
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a configuration was refused. The process does not start with one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The YAML is malformed or does not fit the schema (unknown field, bad duration, ...).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the field and position.
        message: String,
    },
    /// A value is well-formed YAML but not acceptable.
    #[error("config field {field}: {message}")]
    Invalid {
        /// Where, as a path such as `metrics[2].redis.group`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`, reading any secret files it names.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field and what is wrong with it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::from_yaml(&text, path)
    }

    /// Parses and validates YAML text; `origin` is only used in error messages.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field and what is wrong with it.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let deserializer = yaml_serde::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let message = e.into_inner().to_string();
            // The YAML error often starts with a shorter path of its own; show ours alone.
            let message = match message.split_once(": ") {
                Some((p, rest)) if !p.contains(' ') && field.starts_with(p) => {
                    format!("{field}: {rest}")
                }
                _ if field == "." => message,
                _ => format!("{field}: {message}"),
            };
            ConfigError::Parse {
                path: origin.to_path_buf(),
                message,
            }
        })?;
        config.validate()?;
        for (name, source) in &mut config.sources {
            source.resolve_secrets(name)?;
        }
        Ok(config)
    }

    /// The password files the sources read: a mounted Secret that is rotated changes them in
    /// place, and the config watch re-reads them ([`crate::reload::spawn_watch`]).
    pub fn password_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .sources
            .values()
            .filter_map(SourceConfig::password_file)
            .collect();
        files.sort();
        files.dedup();
        files
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("poll_interval", self.poll_interval),
            ("poll_timeout", self.poll_timeout),
            ("max_staleness", self.max_staleness),
            ("max_backoff", self.max_backoff),
            ("discovery_interval", self.discovery_interval),
            ("pattern_key_retention", self.pattern_key_retention),
        ];
        for (field, d) in positive {
            if d.0.is_zero() {
                return Err(ConfigError::invalid(field, "must be greater than zero"));
            }
        }
        if let Some(clients) = &self.keda_clients {
            if clients.is_empty() {
                return Err(ConfigError::invalid(
                    "keda_clients",
                    "an empty list would refuse every KEDA caller; leave it out for no restriction",
                ));
            }
            crate::security::keda_clients::validate(clients)
                .map_err(|(field, message)| ConfigError::invalid(field, message))?;
        }
        if self.sources.is_empty() {
            return Err(ConfigError::invalid(
                "sources",
                "must name at least one source",
            ));
        }
        for (name, source) in &self.sources {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(ConfigError::invalid(
                    format!("sources.{name}"),
                    "a source name uses letters, digits, '_', '-' and '.'",
                ));
            }
            source.validate(name, self.poll_timeout.0)?;
        }
        if self.metrics.is_empty() {
            return Err(ConfigError::invalid(
                "metrics",
                "must declare at least one metric",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, m) in self.metrics.iter().enumerate() {
            let at = format!("metrics[{i}]");
            validate_metric_name(&m.name).map_err(|e| {
                ConfigError::invalid(format!("{at}.name"), format!("{:?} {e}", m.name))
            })?;
            if !names.insert(m.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("{:?} is declared twice", m.name),
                ));
            }
            let at = format!("metrics[{i}] ({})", m.name);
            for (k, v) in &m.labels {
                validate_key(k).map_err(|e| {
                    ConfigError::invalid(format!("{at}.labels"), format!("label key {k:?} {e}"))
                })?;
                validate_value(v).map_err(|e| {
                    ConfigError::invalid(
                        format!("{at}.labels.{k}"),
                        format!("label value {v:?} {e}"),
                    )
                })?;
            }
            if let Some(ns) = &m.namespaces
                && ns.is_empty()
            {
                return Err(ConfigError::invalid(
                    format!("{at}.namespaces"),
                    "an empty list would serve the metric nowhere; leave it out to serve every namespace",
                ));
            }
            let Some(source) = self.sources.get(&m.source) else {
                let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
                return Err(ConfigError::invalid(
                    format!("{at}.source"),
                    format!("unknown source {:?}; the sources are {known:?}", m.source),
                ));
            };
            source.validate_metric(m, &at)?;
        }
        Ok(())
    }

    /// The metrics read from the named source.
    pub fn metrics_of<'a>(
        &'a self,
        source: &'a str,
    ) -> impl Iterator<Item = &'a MetricConfig> + 'a {
        self.metrics.iter().filter(move |m| m.source == source)
    }
}

/// A secret read from a file or the environment. `Debug` and `Display` print `<redacted>`, so a
/// secret cannot reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that sends it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from `file` or the environment variable `env`; at most one may be given.
    /// Trailing newlines of a file are dropped (editors and `echo` add one).
    ///
    /// # Errors
    /// When both are given, the file cannot be read, or the variable is unset.
    pub fn resolve(
        file: Option<&Path>,
        env: Option<&str>,
        field: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        match (file, env) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                field,
                "give either password_file or password_env, not both",
            )),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid(
                        format!("{field}.password_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Ok(Some(Secret(
                    text.trim_end_matches(['\n', '\r']).to_string(),
                )))
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) => Ok(Some(Secret(v))),
                Err(_) => Err(ConfigError::invalid(
                    format!("{field}.password_env"),
                    format!("environment variable {var} is not set"),
                )),
            },
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A duration written as a number with a unit, or several: `500ms`, `2s`, `1m30s`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `500ms`, `2s`, `1.5s`, `1m30s`, `1h`.
    ///
    /// # Errors
    /// A message quoting the text and showing the accepted forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration {text:?}: write a number with a unit, e.g. 500ms, 2s, 1m30s, 1h"
            )
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(bad());
        }
        let mut total = 0f64;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            if num_len == 0 {
                return Err(bad());
            }
            let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            total += number * scale;
            rest = &rest[unit_len..];
        }
        if !total.is_finite() || total > 1e9 {
            return Err(bad());
        }
        Ok(HumanDuration(Duration::from_secs_f64(total)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HumanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration(DEFAULT_POLL_INTERVAL)
}
fn default_poll_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_POLL_TIMEOUT)
}
fn default_max_staleness() -> HumanDuration {
    HumanDuration(DEFAULT_MAX_STALENESS)
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(DEFAULT_MAX_BACKOFF)
}
fn default_discovery_interval() -> HumanDuration {
    HumanDuration(DEFAULT_DISCOVERY_INTERVAL)
}
fn default_pattern_key_retention() -> HumanDuration {
    HumanDuration(DEFAULT_PATTERN_KEY_RETENTION)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "sources:\n  jobs:\n    redis: {url: \"redis://127.0.0.1:6379/0\"}\n";

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, Path::new("test.yaml"))
    }

    fn with_metric(metric: &str) -> String {
        format!("{BASE}metrics:\n  - {metric}\n")
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../examples/local.yaml");
        let config = load(text).expect("examples/local.yaml is valid");
        assert_eq!(config.poll_interval.0, Duration::from_secs(2));
        assert!(config.metrics.len() >= 5);
    }

    #[test]
    fn invalid_configs_are_refused_naming_the_field() {
        struct Case {
            name: &'static str,
            yaml: String,
            mentions: &'static [&'static str],
        }
        let m = |s: &str| with_metric(s);
        let cases = [
            Case {
                name: "unknown top-level field",
                yaml: format!("pol_interval: 2s\n{BASE}metrics: []\n"),
                mentions: &["unknown field", "pol_interval"],
            },
            Case {
                name: "bad duration",
                yaml: format!("poll_interval: 2 sec\n{}", m("{name: a, source: jobs, measure: length, redis: {type: list, key: q}}")),
                mentions: &["poll_interval", "2 sec"],
            },
            Case {
                name: "uppercase metric name",
                yaml: m("{name: Queue, source: jobs, measure: length, redis: {type: list, key: q}}"),
                mentions: &["metrics[0].name", "\"Queue\""],
            },
            Case {
                name: "duplicate name",
                yaml: format!(
                    "{BASE}metrics:\n  - {{name: a, source: jobs, measure: length, redis: {{type: list, key: q}}}}\n  - {{name: a, source: jobs, measure: length, redis: {{type: list, key: r}}}}\n"
                ),
                mentions: &["metrics[1].name", "declared twice"],
            },
            Case {
                name: "unknown source",
                yaml: m("{name: a, source: nope, measure: length, redis: {type: list, key: q}}"),
                mentions: &["metrics[0] (a).source", "unknown source \"nope\"", "jobs"],
            },
            Case {
                name: "measure unknown for key type",
                yaml: m("{name: a, source: jobs, measure: lag, redis: {type: list, key: q}}"),
                mentions: &["metrics[0] (a).redis", "lag does not apply to type list"],
            },
            Case {
                name: "unknown measure",
                yaml: m("{name: a, source: jobs, measure: depth, redis: {type: list, key: q}}"),
                mentions: &["unknown variant `depth`"],
            },
            Case {
                name: "unknown field in target",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, key: q, grup: x}}"),
                mentions: &["unknown field `grup`"],
            },
            Case {
                name: "key and pattern",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, key: q, pattern: \"q*\"}}"),
                mentions: &["either key or pattern"],
            },
            Case {
                name: "pattern without wildcard",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, pattern: q}}"),
                mentions: &["redis.pattern", "no wildcard"],
            },
            Case {
                name: "age without timestamp",
                yaml: m("{name: a, source: jobs, measure: oldest_age_seconds, redis: {type: list, key: q}}"),
                mentions: &["needs timestamp"],
            },
            Case {
                name: "stream lag without group",
                yaml: m("{name: a, source: jobs, measure: lag, redis: {type: stream, key: s}}"),
                mentions: &["needs group"],
            },
            Case {
                name: "group on a list",
                yaml: m("{name: a, source: jobs, measure: length, redis: {type: list, key: q, group: g}}"),
                mentions: &["redis.group", "only applies to type stream"],
            },
            Case {
                name: "hash template without id",
                yaml: m("{name: a, source: jobs, measure: oldest_age_seconds, redis: {type: list, key: q, timestamp: {hash: \"rq:job\", field: t, unit: rfc3339}}}"),
                mentions: &["timestamp.hash", "{id}"],
            },
            Case {
                name: "bad label value",
                yaml: m("{name: a, source: jobs, measure: length, labels: {queue: \"a:b\"}, redis: {type: list, key: q}}"),
                mentions: &["labels.queue", "\"a:b\""],
            },
            Case {
                name: "reserved label",
                yaml: m("{name: a, source: jobs, measure: length, labels: {key: x}, redis: {type: list, key: q}}"),
                mentions: &["must not set \"key\""],
            },
            Case {
                name: "missing redis block",
                yaml: m("{name: a, source: jobs, measure: length}"),
                mentions: &["needs a `redis:` block"],
            },
            Case {
                name: "bad url scheme",
                yaml: "sources:\n  jobs:\n    redis: {url: \"http://x\"}\nmetrics:\n  - {name: a, source: jobs, measure: length, redis: {type: list, key: q}}\n".into(),
                mentions: &["sources.jobs.redis.url", "redis://"],
            },
            Case {
                name: "unset password env",
                yaml: "sources:\n  jobs:\n    redis: {url: \"redis://x\", password_env: QMA_TEST_UNSET_VARIABLE}\nmetrics:\n  - {name: a, source: jobs, measure: length, redis: {type: list, key: q}}\n".into(),
                mentions: &["password_env", "QMA_TEST_UNSET_VARIABLE is not set"],
            },
            Case {
                name: "rabbitmq source without urls",
                yaml: "sources:\n  r:\n    rabbitmq: {username: guest}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue: q}}\n".into(),
                mentions: &["sources.r.rabbitmq", "management_url or amqp_url"],
            },
            Case {
                name: "rabbitmq measure not over amqp",
                yaml: "sources:\n  r:\n    rabbitmq: {amqp_url: \"amqp://127.0.0.1:5672/%2f\"}\nmetrics:\n  - {name: a, source: r, measure: oldest_age_seconds, rabbitmq: {queue: q}}\n".into(),
                mentions: &["metrics[0] (a).rabbitmq", "not available over AMQP"],
            },
            Case {
                name: "rabbitmq pattern over amqp",
                yaml: "sources:\n  r:\n    rabbitmq: {amqp_url: \"amqp://127.0.0.1:5672/%2f\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue_pattern: \"^x\"}}\n".into(),
                mentions: &["queue_pattern", "AMQP cannot list queues"],
            },
            Case {
                name: "rabbitmq bad regex",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue_pattern: \"(\"}}\n".into(),
                mentions: &["queue_pattern", "not a valid regex"],
            },
            Case {
                name: "redis measure on rabbitmq",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: lag, rabbitmq: {queue: q}}\n".into(),
                mentions: &["measure lag is not available from RabbitMQ"],
            },
            Case {
                name: "redis block on a rabbitmq metric",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue: q}, redis: {type: list, key: q}}\n".into(),
                mentions: &["metrics[0] (a).redis", "remove the `redis:` block"],
            },
            Case {
                name: "reserved rabbitmq label",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://127.0.0.1:15672\"}\nmetrics:\n  - {name: a, source: r, measure: ready, labels: {vhost: x}, rabbitmq: {queue: q}}\n".into(),
                mentions: &["must not set \"vhost\""],
            },
            Case {
                name: "two kinds in one source",
                yaml: "sources:\n  r:\n    rabbitmq: {management_url: \"http://x\"}\n    redis: {url: \"redis://x\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue: q}}\n".into(),
                mentions: &["exactly one kind"],
            },
            Case {
                name: "zero interval",
                yaml: format!("poll_interval: 0s\n{}", m("{name: a, source: jobs, measure: length, redis: {type: list, key: q}}")),
                mentions: &["poll_interval", "greater than zero"],
            },
        ];
        for c in cases {
            let err = load(&c.yaml).expect_err(c.name).to_string();
            for want in c.mentions {
                assert!(
                    err.contains(want),
                    "case {}: {err:?} should mention {want:?}",
                    c.name
                );
            }
        }
    }

    #[test]
    fn durations_accept_common_forms() {
        for (text, ms) in [
            ("500ms", 500),
            ("2s", 2000),
            ("1.5s", 1500),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
        ] {
            assert_eq!(
                HumanDuration::parse(text).map(|d| d.0.as_millis()),
                Ok(ms),
                "{text}"
            );
        }
        for bad in ["", "2", "s", "2 sec", "-1s", "1d"] {
            assert!(
                HumanDuration::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let dir = std::env::temp_dir().join(format!("qma-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("pw");
        std::fs::write(&file, "hunter2-secret\n").expect("write");
        let yaml = format!(
            "sources:\n  jobs:\n    redis: {{url: \"redis://:inline-pass@127.0.0.1:6379\", password_file: {}}}\nmetrics:\n  - {{name: a, source: jobs, measure: length, redis: {{type: list, key: q}}}}\n",
            file.display()
        );
        let config = load(&yaml).expect("loads");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2-secret") && !debug.contains("inline-pass"),
            "{debug}"
        );
        let SourceConfig::Redis(r) = &config.sources["jobs"] else {
            panic!("jobs is a redis source");
        };
        assert_eq!(
            r.password.as_ref().map(Secret::expose),
            Some("hunter2-secret")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
