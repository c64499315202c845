//! The `dcgm:` blocks of the configuration: where the exporters are (under `sources`) and how a
//! metric combines a workload's GPUs (under `metrics`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::gpus::Alias;
use crate::primitives::redact_url;
use crate::primitives::{ConfigError, HumanDuration};
use crate::sources::exposition::fetch::validate_scheme_and_path;
use crate::sources::exposition::scrape_settings::ScrapeSettings;
use crate::sources::field_group::{self, Grouped};
use crate::sources::kubernetes::workloads::WorkloadAggregate;
use crate::sources::measure::Measure;

pub use crate::sources::exposition::prometheus_api::PrometheusQuery;
pub use crate::sources::kubernetes::workloads::{
    NAMESPACE_LABEL, RESERVED_LABELS, WORKLOAD_KIND_LABEL, WORKLOAD_LABEL,
};

/// The measures a `dcgm` source serves, each in one declared unit (README).
pub const MEASURES: &[Measure] = &[
    Measure::GpuUtilization,
    Measure::MemoryUsedRatio,
    Measure::PowerWatts,
];

/// dcgm-exporter endpoints (`sources.<name>.dcgm`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct DcgmSourceConfig {
    /// A static list of `http(s)://host:9400/metrics` URLs.
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    /// Or: the exporter Service whose EndpointSlices list the endpoints, followed as they change.
    #[serde(default)]
    pub discover: Option<Discover>,
    /// Or: a Prometheus that already scrapes the exporters, asked once per poll.
    #[serde(default)]
    pub prometheus: Option<PrometheusQuery>,
    /// More exporter metric names, on top of the built-in table (exporter renames, custom names).
    #[serde(default)]
    pub aliases: Vec<Alias>,
    /// `scrape_timeout`, `extra_labels`, `ca_file`, `max_response_bytes`: how each endpoint
    /// is scraped.
    #[serde(skip)]
    pub scrape: ScrapeSettings,
    /// Overrides the global `poll_interval`.
    #[serde(default)]
    pub poll_interval: Option<HumanDuration>,
    /// Overrides the global `poll_timeout`.
    #[serde(default)]
    pub poll_timeout: Option<HumanDuration>,
}

impl<'de> Grouped<'de> for DcgmSourceConfig {
    type Group = ScrapeSettings;
    const NAME: &'static str = "DcgmSourceConfig";
    const FIELDS: &'static [&'static str] = &[
        "endpoints",
        "discover",
        "prometheus",
        "scrape_timeout",
        "extra_labels",
        "aliases",
        "ca_file",
        "max_response_bytes",
        "poll_interval",
        "poll_timeout",
    ];

    fn deserialize_own<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DcgmSourceConfig::deserialize(d)
    }

    fn set_group(&mut self, group: ScrapeSettings) {
        self.scrape = group;
    }
}

impl<'de> Deserialize<'de> for DcgmSourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        field_group::deserialize(d)
    }
}

/// An exporter Service to discover endpoints from (`discover:`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discover {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name (EndpointSlices carry it as `kubernetes.io/service-name`).
    pub service: String,
    /// The port's name in the Service (dcgm-exporter's chart calls it `metrics`).
    pub port: String,
    /// `http` (default) or `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The path scraped. Default `/metrics`.
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_scheme() -> String {
    "http".into()
}

fn default_path() -> String {
    "/metrics".into()
}

impl DcgmSourceConfig {
    /// The built-in alias table with this source's additions.
    pub fn all_aliases(&self) -> Vec<Alias> {
        let mut aliases = super::gpus::builtin_aliases();
        aliases.extend(self.aliases.iter().cloned());
        aliases
    }

    pub(crate) fn validate(&self, at: &str, poll_timeout: Duration) -> Result<(), ConfigError> {
        let given = [
            self.endpoints.is_some(),
            self.discover.is_some(),
            self.prometheus.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => {
                return Err(ConfigError::invalid(
                    at,
                    "needs endpoints (a list of URLs), discover (namespace, service, port) or prometheus (url)",
                ));
            }
            1 => {}
            _ => {
                return Err(ConfigError::invalid(
                    at,
                    "give one of endpoints, discover or prometheus",
                ));
            }
        }
        if let Some(p) = &self.prometheus {
            p.validate(&format!("{at}.prometheus"))?;
        }
        match (&self.endpoints, &self.discover) {
            (Some(_), Some(_)) | (None, None) => {}
            (Some(list), None) => {
                if list.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{at}.endpoints"),
                        "must list at least one URL",
                    ));
                }
                for (i, url) in list.iter().enumerate() {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(ConfigError::invalid(
                            format!("{at}.endpoints[{i}]"),
                            format!("{:?} must start with http:// or https://", redact_url(url)),
                        ));
                    }
                }
            }
            (None, Some(d)) => {
                for (field, value) in [
                    ("namespace", &d.namespace),
                    ("service", &d.service),
                    ("port", &d.port),
                ] {
                    if value.is_empty() {
                        return Err(ConfigError::invalid(
                            format!("{at}.discover.{field}"),
                            "must not be empty",
                        ));
                    }
                }
                validate_scheme_and_path(&format!("{at}.discover"), &d.scheme, &d.path)?;
            }
        }
        self.scrape.validate(at, poll_timeout, "modelName")?;
        for (i, alias) in self.aliases.iter().enumerate() {
            let name_ok = alias.metric.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || matches!(c, '_' | ':') || (i > 0 && c.is_ascii_digit())
            });
            if alias.metric.is_empty() || !name_ok {
                return Err(ConfigError::invalid(
                    format!("{at}.aliases[{i}].metric"),
                    format!(
                        "{:?} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                        alias.metric
                    ),
                ));
            }
            if !(alias.scale.is_finite() && alias.scale > 0.0) {
                return Err(ConfigError::invalid(
                    format!("{at}.aliases[{i}].scale"),
                    format!("{} must be a positive number", alias.scale),
                ));
            }
        }
        Ok(())
    }
}

/// How a metric combines a workload's GPUs (`metrics[].dcgm`). The block is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcgmTarget {
    /// `mean` (default), `max`, `sum` or `gpus`.
    #[serde(default)]
    pub aggregate: Aggregate,
}

/// The configured spelling of [`WorkloadAggregate`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Mean over the workload's pods.
    #[default]
    Mean,
    /// The busiest pod.
    Max,
    /// Sum over pods.
    Sum,
    /// GPUs (or MIG instances) held.
    Gpus,
}

impl From<Aggregate> for WorkloadAggregate {
    fn from(a: Aggregate) -> Self {
        match a {
            Aggregate::Mean => WorkloadAggregate::Mean,
            Aggregate::Max => WorkloadAggregate::Max,
            Aggregate::Sum => WorkloadAggregate::Sum,
            Aggregate::Gpus => WorkloadAggregate::Gpus,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, SourceConfig};

    const GPUS: &str =
        "sources:\n  gpus:\n    dcgm:\n      endpoints: [\"http://10.0.0.1:9400/metrics\"]\n";

    fn load(yaml: &str) -> Result<Config, String> {
        Config::from_yaml(yaml, Path::new("test.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_dcgm_source_and_its_metrics_load() {
        let yaml = "kubernetes: {kubeconfig: /tmp/kc}\nsources:\n  gpus:\n    dcgm:\n      discover: {namespace: gpu-operator, service: dcgm-exporter, port: metrics}\n      extra_labels: {model_name: modelName}\n      aliases: [{metric: MY_UTIL, field: engine_active, scale: 100}]\nmetrics:\n  - {name: gpu_utilization, source: gpus, measure: gpu_utilization}\n  - {name: gpus_held, source: gpus, measure: gpu_utilization, dcgm: {aggregate: gpus}}\n";
        let config = load(yaml).expect("valid");
        let Some(SourceConfig::Dcgm(d)) = config.sources.get("gpus") else {
            panic!("a dcgm source")
        };
        let discover = d.discover.as_ref().expect("discover");
        assert_eq!(
            (discover.scheme.as_str(), discover.path.as_str()),
            ("http", "/metrics")
        );
        assert_eq!(
            d.scrape.scrape_timeout(std::time::Duration::from_secs(5)),
            std::time::Duration::from_secs(4)
        );
        assert_eq!(
            config.metrics[1].targets.dcgm.as_ref().map(|t| t.aggregate),
            Some(super::Aggregate::Gpus)
        );
    }

    #[test]
    fn invalid_dcgm_configs_are_refused_naming_the_field() {
        let metric = "metrics:\n  - {name: g, source: gpus, measure: gpu_utilization}\n";
        let cases: &[(&str, String, &[&str])] = &[
            (
                "no endpoints",
                format!("sources:\n  gpus:\n    dcgm: {{}}\n{metric}"),
                &["sources.gpus.dcgm", "needs endpoints"],
            ),
            (
                "both",
                format!("sources:\n  gpus:\n    dcgm:\n      endpoints: [\"http://a\"]\n      discover: {{namespace: n, service: s, port: p}}\n{metric}"),
                &["one of endpoints, discover or prometheus"],
            ),
            (
                "not a URL",
                format!("sources:\n  gpus:\n    dcgm:\n      endpoints: [\"10.0.0.1:9400\"]\n{metric}"),
                &["sources.gpus.dcgm.endpoints[0]", "http://"],
            ),
            (
                "discover without port",
                format!("sources:\n  gpus:\n    dcgm:\n      discover: {{namespace: n, service: s}}\n{metric}"),
                &["missing field `port`"],
            ),
            (
                "prometheus without a scheme",
                format!("sources:\n  gpus:\n    dcgm:\n      prometheus: {{url: \"prometheus:9090\"}}\n{metric}"),
                &["sources.gpus.dcgm.prometheus.url", "http://"],
            ),
            (
                "an alias that is not a metric name",
                format!("{GPUS}      aliases: [{{metric: \"a-b\", field: gpu_util, scale: 1}}]\n{metric}"),
                &["aliases[0].metric", "not a Prometheus metric name"],
            ),
            (
                "bad scheme",
                format!("sources:\n  gpus:\n    dcgm:\n      discover: {{namespace: n, service: s, port: p, scheme: ftp}}\n{metric}"),
                &["sources.gpus.dcgm.discover.scheme", "ftp"],
            ),
            (
                "scrape timeout above poll timeout",
                format!("poll_timeout: 2s\n{GPUS}      scrape_timeout: 3s\n{metric}"),
                &["scrape_timeout", "at most the poll timeout"],
            ),
            (
                "reserved extra label",
                format!("{GPUS}      extra_labels: {{workload: modelName}}\n{metric}"),
                &["extra_labels.workload", "set by the adapter"],
            ),
            (
                "unknown alias field",
                format!("{GPUS}      aliases: [{{metric: X, field: temperature, scale: 1}}]\n{metric}"),
                &["aliases[0].field", "temperature"],
            ),
            (
                "zero scale",
                format!("{GPUS}      aliases: [{{metric: X, field: gpu_util, scale: 0}}]\n{metric}"),
                &["aliases[0].scale", "positive"],
            ),
            (
                "a queue measure on a GPU source",
                format!("{GPUS}metrics:\n  - {{name: g, source: gpus, measure: length}}\n"),
                &["metrics[0] (g).measure", "does not apply to a dcgm source"],
            ),
            (
                "a GPU measure on a Redis source",
                "sources:\n  r:\n    redis: {url: \"redis://127.0.0.1\"}\nmetrics:\n  - {name: g, source: r, measure: gpu_utilization, redis: {type: list, key: q}}\n".into(),
                &["metrics[0] (g).redis", "gpu_utilization"],
            ),
            (
                "a reserved static label",
                format!("{GPUS}metrics:\n  - {{name: g, source: gpus, measure: gpu_utilization, labels: {{namespace: x}}}}\n"),
                &["metrics[0] (g).labels", "\"namespace\""],
            ),
            (
                "unknown aggregate",
                format!("{GPUS}metrics:\n  - {{name: g, source: gpus, measure: gpu_utilization, dcgm: {{aggregate: median}}}}\n"),
                &["dcgm.aggregate", "median"],
            ),
            (
                "a dcgm block on a redis metric",
                "sources:\n  r:\n    redis: {url: \"redis://127.0.0.1\"}\nmetrics:\n  - {name: g, source: r, measure: length, redis: {type: list, key: q}, dcgm: {aggregate: max}}\n".into(),
                &["metrics[0] (g).dcgm", "remove the `dcgm:` block"],
            ),
        ];
        for (name, yaml, mentions) in cases {
            let err = load(yaml).expect_err(name);
            for want in *mentions {
                assert!(
                    err.contains(want),
                    "case {name}: {err:?} should mention {want:?}"
                );
            }
        }
    }
}
