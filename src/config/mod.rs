//! The YAML configuration: sources (connections) and metrics (what to read, how it is named).
//!
//! [`Config::load`] parses and validates in one step; a config that loads is one every other
//! module can trust (names valid and unique, every metric's source exists, every measure fits its
//! source's kind, secrets read). Secrets are held in [`Secret`], whose `Debug` never shows them.
//! The only I/O here is reading the config file and secret files at load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::kube_client::KubernetesConfig;
pub use crate::primitives::{ConfigError, HumanDuration, Secret};
use crate::security::keda_clients::KedaClientConfig;
pub use crate::sources::measure::Measure;
pub use crate::sources::{MetricConfig, MetricTargets, SourceConfig};

mod validate;

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

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, Path::new("test.yaml"))
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../../examples/local.yaml");
        let config = load(text).expect("examples/local.yaml is valid");
        assert_eq!(config.poll_interval.0, Duration::from_secs(2));
        assert!(config.metrics.len() >= 5);
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
