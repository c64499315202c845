//! The YAML configuration: sources (connections) and metrics (what to read, how it is named).
//!
//! [`Config::load`] parses and validates in one step; a config that loads is one every other
//! module can trust (names valid and unique, every metric's source exists, every measure fits its
//! source's kind, secrets read). Secrets are held in [`Secret`], whose `Debug` never shows them.
//! The only I/O here is reading the config file and secret files at load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::k8s::client::KubernetesConfig;
use crate::k8s::label::{validate_key, validate_value};
use crate::model::validate_metric_name;
pub use crate::primitives::{ConfigError, HumanDuration, Secret};
use crate::security::keda_clients::KedaClientConfig;
pub use crate::sources::measure::Measure;
pub use crate::sources::{MetricConfig, MetricTargets, SourceConfig};

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
    /// How to reach the Kubernetes API (for `dcgm` and `inference` sources). Default:
    /// in-cluster, else `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// Which KEDA clients (by client certificate) may read which namespaces over gRPC; `None`:
    /// any caller reads every namespace ([`crate::security::keda_clients`]).
    #[serde(default)]
    pub keda_clients: Option<Vec<KedaClientConfig>>,
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
            .flat_map(SourceConfig::password_files)
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

    /// The top-level settings every source's spec carries.
    pub fn globals(&self) -> crate::sources::build::Globals {
        crate::sources::build::Globals {
            poll_timeout: self.poll_timeout.0,
            discovery_interval: self.discovery_interval.0,
            pattern_key_retention: self.pattern_key_retention.0,
        }
    }

    /// The spec of source `name` as kind `K` (its connection, metrics and settings), for
    /// building that kind's concrete source; `None` if there is no such source of that kind.
    pub fn spec_of<K: crate::sources::kinds::Kind>(
        &self,
        name: &str,
    ) -> Option<crate::sources::build::SourceSpec<'_, K>> {
        let (name, source) = self.sources.get_key_value(name)?;
        crate::sources::kinds::spec_of::<K>(name, source, &self.metrics, self.globals())
    }

    /// The metrics read from the named source.
    pub fn metrics_of<'a>(
        &'a self,
        source: &'a str,
    ) -> impl Iterator<Item = &'a MetricConfig> + 'a {
        self.metrics.iter().filter(move |m| m.source == source)
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
                name: "rabbitmq vhost other than amqp_url's",
                yaml: "sources:\n  r:\n    rabbitmq: {amqp_url: \"amqp://127.0.0.1:5672/jobs\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {vhost: other, queue: q}}\n".into(),
                mentions: &["metrics[0] (a).rabbitmq.vhost", "\"other\"", "\"jobs\"", "amqp_url"],
            },
            Case {
                name: "rabbitmq amqp_url path of two segments",
                yaml: "sources:\n  r:\n    rabbitmq: {amqp_url: \"amqp://127.0.0.1:5672/a/b\"}\nmetrics:\n  - {name: a, source: r, measure: ready, rabbitmq: {queue: q}}\n".into(),
                mentions: &["sources.r.rabbitmq.amqp_url", "%2F"],
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
            r.credentials.password.as_ref().map(Secret::expose),
            Some("hunter2-secret")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
