//! One served metric as the config declares it: the fields every metric has, and the block of
//! its source's kind ([`MetricTargets`], one field per kind). The blocks are the kinds' own
//! config types; this module imports only those (`<kind>::config`), never a kind's reading
//! code, so a kind can take a [`MetricConfig`] without an import circle. What a source of each
//! kind does with them is [`super::kinds`]'.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use serde::de::{Error as _, MapAccess};

use super::dcgm::config::DcgmTarget;
use super::inference::config::InferenceTarget;
use super::nats::config::NatsTarget;
use super::postgres::config::PostgresTarget;
use super::rabbitmq::config::RabbitMqTarget;
use super::redis::config::RedisMetric;
use crate::primitives::{ConfigError, HumanDuration};
use crate::sources::kubernetes::replicas::WorkersConfig;
use crate::sources::measure::Measure;

/// One served metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricConfig {
    /// What the HPA names: lowercase letters, digits, `_`, `.`, `-`.
    pub name: String,
    /// Free text, shown in `/metrics` help and `check`.
    pub description: Option<String>,
    /// The name of an entry under `sources`.
    pub source: String,
    /// What to compute; which measures exist depends on the source's kind (and, for Redis, on
    /// the key type).
    pub measure: Measure,
    /// Labels added to every series of this metric (served as `metricLabels`).
    pub labels: BTreeMap<String, String>,
    /// Namespaces this metric is served in; absent means every namespace.
    pub namespaces: Option<Vec<String>>,
    /// `arrival_rate`, `completion_rate` and (streams, job libraries) `drain_seconds`: the
    /// counters' readings of this window make the rate. Default [`DEFAULT_WINDOW`].
    pub window: Option<HumanDuration>,
    /// `workers_needed`: the longest a job should wait.
    pub target_wait: Option<HumanDuration>,
    /// `workers_needed`: the workload whose ready replicas run the jobs.
    pub workers: Option<WorkersConfig>,
    /// What to read, in the block of its source's kind (`redis: {...}`, `rabbitmq: {...}`).
    pub targets: MetricTargets,
}

/// Default rate window: several polls at the default interval, and six of Sidekiq's 10 s
/// counter flushes.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// The shortest window: a rate needs two readings inside it.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

impl MetricConfig {
    /// The rate window.
    pub fn window(&self) -> Duration {
        self.window.map_or(DEFAULT_WINDOW, |w| w.0)
    }

    /// Whether this metric is computed over its `window`: rates, and the drain time of
    /// streams and job libraries on Redis, of NATS consumers and of PostgreSQL presets
    /// (RabbitMQ's is over the broker's own rates). Those read from counters at each poll
    /// have no value before a source's second poll; PostgreSQL's count rows by their own
    /// times and have one at the first.
    pub fn over_window(&self) -> bool {
        self.measure.is_counter_rate()
            || self.measure == Measure::WorkersNeeded
            || (self.measure == Measure::DrainSeconds
                && (self.targets.redis.is_some()
                    || self.targets.nats.is_some()
                    || self.targets.postgres.is_some()))
    }

    /// Whether this metric is computed from counters read at each poll, so that it has no
    /// value before a source's second poll (PostgreSQL's rates count rows by their times).
    pub fn from_counters(&self) -> bool {
        self.over_window() && self.targets.postgres.is_none()
    }

    /// Checks `target_wait` and `workers` (`at` names the metric): both for `workers_needed`,
    /// neither for any other measure.
    ///
    /// # Errors
    /// The message, naming the field.
    pub fn validate_workers(&self, at: &str) -> Result<(), ConfigError> {
        if self.measure != Measure::WorkersNeeded {
            for (field, set) in [
                ("target_wait", self.target_wait.is_some()),
                ("workers", self.workers.is_some()),
            ] {
                if set {
                    return Err(ConfigError::invalid(
                        format!("{at}.{field}"),
                        "only applies to measure workers_needed",
                    ));
                }
            }
            return Ok(());
        }
        match self.target_wait {
            None => {
                return Err(ConfigError::invalid(
                    at,
                    "workers_needed needs target_wait (the longest a job should wait, e.g. 30s)",
                ));
            }
            Some(t) if t.0 < Duration::from_secs(1) => {
                return Err(ConfigError::invalid(
                    format!("{at}.target_wait"),
                    "must be at least 1s",
                ));
            }
            Some(_) => {}
        }
        match &self.workers {
            None => Err(ConfigError::invalid(
                at,
                "workers_needed needs workers: {deployment: NAME, namespace: NS} (or statefulset), whose ready replicas run the jobs",
            )),
            Some(w) => w.validate(&format!("{at}.workers")),
        }
    }

    /// Checks `window` (`at` names the metric): only for a measure over a window, and not
    /// shorter than [`MIN_WINDOW`]. Which kinds compute which measure over a window is each
    /// kind's own check.
    ///
    /// # Errors
    /// The message, naming `window`.
    pub fn validate_window(&self, at: &str, over_window: bool) -> Result<(), ConfigError> {
        let Some(w) = self.window else {
            return Ok(());
        };
        if !over_window {
            return Err(ConfigError::invalid(
                format!("{at}.window"),
                format!(
                    "measure {} is not computed over a window (window applies to arrival_rate, completion_rate, and drain_seconds of streams and job libraries)",
                    self.measure
                ),
            ));
        }
        if w.0 < MIN_WINDOW {
            return Err(ConfigError::invalid(
                format!("{at}.window"),
                "must be at least 1s: a rate needs two polls inside it",
            ));
        }
        Ok(())
    }
}

/// The kinds' names, as the config spells them (`sources.<name>.<kind>`, `metrics[].<kind>`).
pub const KINDS: &[&str] = &["redis", "rabbitmq", "dcgm", "inference", "nats", "postgres"];

/// A metric's kind-specific block (`metrics[].redis`, ...): at most one is meant to be set,
/// the one of its source's kind (checked by [`super::SourceConfig::validate_metric`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricTargets {
    /// `metrics[].redis`.
    pub redis: Option<RedisMetric>,
    /// `metrics[].rabbitmq`.
    pub rabbitmq: Option<RabbitMqTarget>,
    /// `metrics[].dcgm`.
    pub dcgm: Option<DcgmTarget>,
    /// `metrics[].inference`.
    pub inference: Option<InferenceTarget>,
    /// `metrics[].nats`.
    pub nats: Option<NatsTarget>,
    /// `metrics[].postgres`.
    pub postgres: Option<PostgresTarget>,
}

impl MetricTargets {
    /// Reads the block named `key` from `map` if `key` names a kind; `Ok(false)` if it does not.
    pub(crate) fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        fn once<'de, A: MapAccess<'de>, T: serde::Deserialize<'de>>(
            slot: &mut Option<T>,
            key: &'static str,
            map: &mut A,
        ) -> Result<bool, A::Error> {
            if slot.is_some() {
                return Err(A::Error::duplicate_field(key));
            }
            *slot = Some(map.next_value()?);
            Ok(true)
        }
        // Every field named (no `..`): a new kind's block is a compile error here until read.
        let MetricTargets {
            redis,
            rabbitmq,
            dcgm,
            inference,
            nats,
            postgres,
        } = self;
        match key {
            "redis" => once(redis, "redis", map),
            "rabbitmq" => once(rabbitmq, "rabbitmq", map),
            "dcgm" => once(dcgm, "dcgm", map),
            "inference" => once(inference, "inference", map),
            "nats" => once(nats, "nats", map),
            "postgres" => once(postgres, "postgres", map),
            _ => Ok(false),
        }
    }

    /// The kinds whose block is set.
    pub fn present(&self) -> Vec<&'static str> {
        let MetricTargets {
            redis,
            rabbitmq,
            dcgm,
            inference,
            nats,
            postgres,
        } = self;
        let set = [
            ("redis", redis.is_some()),
            ("rabbitmq", rabbitmq.is_some()),
            ("dcgm", dcgm.is_some()),
            ("inference", inference.is_some()),
            ("nats", nats.is_some()),
            ("postgres", postgres.is_some()),
        ];
        set.into_iter()
            .filter_map(|(kind, set)| set.then_some(kind))
            .collect()
    }
}

/// The fields of a metric besides the kinds' blocks.
const METRIC_FIELDS: &[&str] = &[
    "name",
    "description",
    "source",
    "measure",
    "labels",
    "namespaces",
    "window",
    "target_wait",
    "workers",
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
                let (mut labels, mut namespaces, mut window) = (None, None, None);
                let (mut target_wait, mut workers) = (None, None);
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
                        "window" => once(&mut window, "window", &mut map)?,
                        "target_wait" => once(&mut target_wait, "target_wait", &mut map)?,
                        "workers" => once(&mut workers, "workers", &mut map)?,
                        other => {
                            if !targets.read(other, &mut map)? {
                                let mut expected: Vec<&str> = METRIC_FIELDS.to_vec();
                                expected.extend(KINDS);
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
                    window,
                    target_wait,
                    workers,
                    targets,
                })
            }
        }
        d.deserialize_map(Fields)
    }
}
