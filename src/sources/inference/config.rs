//! The `inference:` blocks of the configuration: which model-server pods are scraped (under
//! `sources`) and what a metric reads from them (under `metrics`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::presets::{Combine, Preset, Reading, Recipe};
use crate::primitives::{ConfigError, HumanDuration};
use crate::sources::exposition::fetch::validate_scheme_and_path;
use crate::sources::exposition::prometheus_api::PrometheusQuery;
use crate::sources::exposition::scrape_settings::ScrapeSettings;
use crate::sources::field_group::{self, Grouped};
use crate::sources::kubernetes::pods::PodPort;
use crate::sources::measure::Measure;

/// Default rate window: long enough for several polls at the default interval, short enough
/// that a burst shows within half a minute.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(30);

/// Model-server pods (`sources.<name>.inference`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct InferenceSourceConfig {
    /// The server's metric names (`vllm`, `tgi`, `triton`, `sglang`); without one, only
    /// `value` and `rate` measures of named families.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// The pods to scrape, followed through a watch.
    #[serde(default)]
    pub pods: Option<PodSelection>,
    /// Or: a Prometheus that already scrapes them, asked once per poll.
    #[serde(default)]
    pub prometheus: Option<PrometheusQuery>,
    /// Counter rates and queue times are computed over the scrapes of this window. Default 30s.
    #[serde(default)]
    pub rate_window: Option<HumanDuration>,
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

impl<'de> Grouped<'de> for InferenceSourceConfig {
    type Group = ScrapeSettings;
    const NAME: &'static str = "InferenceSourceConfig";
    const FIELDS: &'static [&'static str] = &[
        "preset",
        "pods",
        "prometheus",
        "scrape_timeout",
        "rate_window",
        "extra_labels",
        "ca_file",
        "max_response_bytes",
        "poll_interval",
        "poll_timeout",
    ];

    fn deserialize_own<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        InferenceSourceConfig::deserialize(d)
    }

    fn set_group(&mut self, group: ScrapeSettings) {
        self.scrape = group;
    }
}

impl<'de> Deserialize<'de> for InferenceSourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        field_group::deserialize(d)
    }
}

/// Which pods serve the metrics (`pods:`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSelection {
    /// The pods' namespace; absent: every namespace (each series still carries its own).
    #[serde(default)]
    pub namespace: Option<String>,
    /// A label selector (`app.kubernetes.io/name=vllm`), as `kubectl -l` takes it.
    pub selector: String,
    /// The container port serving `/metrics`: a number, or the name a container gives it.
    pub port: PodPort,
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

/// What a metric reads (`metrics[].inference`); optional for a preset's measures.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceTarget {
    /// The family read by `measure: value` (a gauge) or `measure: rate` (a counter, with its
    /// `_total`).
    #[serde(default)]
    pub family: Option<String>,
    /// Only series with these label values (`model_name: llama-3-8b`).
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// How a pod's series combine: `sum`, `mean` or `max` (default: the preset's, else sum).
    #[serde(default)]
    pub pod: Option<Combine>,
    /// How a workload's pods combine: `sum`, `mean` or `max` (default: the preset's, else sum).
    #[serde(default)]
    pub workload: Option<Combine>,
}

impl InferenceSourceConfig {
    /// The rate window.
    pub fn rate_window(&self) -> Duration {
        self.rate_window.map_or(DEFAULT_RATE_WINDOW, |d| d.0)
    }

    pub(crate) fn validate(&self, at: &str, poll_timeout: Duration) -> Result<(), ConfigError> {
        match (&self.pods, &self.prometheus) {
            (None, None) => {
                return Err(ConfigError::invalid(
                    at,
                    "needs pods (selector, port) or prometheus (url)",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(at, "give one of pods or prometheus"));
            }
            (Some(p), None) => p.validate(&format!("{at}.pods"))?,
            (None, Some(p)) => p.validate(&format!("{at}.prometheus"))?,
        }
        self.scrape.validate(at, poll_timeout, "model_name")?;
        if self.rate_window() < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                format!("{at}.rate_window"),
                "must be at least 1s (a rate needs two scrapes inside it)",
            ));
        }
        Ok(())
    }

    /// What a metric of this source reads, with its combinations resolved: the preset's
    /// recipe for its measure with the block's overrides, or the block's family.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field when the measure and block do not fit.
    pub fn recipe(
        &self,
        measure: Measure,
        target: Option<&InferenceTarget>,
        at: &str,
    ) -> Result<Recipe, ConfigError> {
        let default = InferenceTarget::default();
        let t = target.unwrap_or(&default);
        let block = format!("{at}.inference");
        let mut recipe = match measure {
            Measure::Value | Measure::Rate => {
                let Some(family) = &t.family else {
                    return Err(ConfigError::invalid(
                        format!("{block}.family"),
                        format!("measure {} needs the family to read", measure),
                    ));
                };
                let reading = if measure == Measure::Value {
                    Reading::Gauge(vec![family.clone()])
                } else {
                    Reading::Rate(family.clone())
                };
                Recipe {
                    reading,
                    pod: Combine::Sum,
                    workload: Combine::Sum,
                }
            }
            measure => {
                let Some(preset) = self.preset else {
                    return Err(ConfigError::invalid(
                        format!("{at}.measure"),
                        format!(
                            "{measure} needs the source's preset (vllm, tgi, triton, sglang); without one, use value or rate with a family"
                        ),
                    ));
                };
                let Some(recipe) = preset.recipe(measure) else {
                    let mut offered: Vec<&str> =
                        preset.measures().iter().map(|m| m.as_str()).collect();
                    offered.extend(["value", "rate"]);
                    return Err(ConfigError::invalid(
                        format!("{at}.measure"),
                        format!(
                            "{measure} does not apply to a {} source; it has {offered:?}",
                            preset.as_str()
                        ),
                    ));
                };
                if t.family.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{block}.family"),
                        format!(
                            "the {} preset names the family of {measure}; to read another, use measure value or rate",
                            preset.as_str()
                        ),
                    ));
                }
                if t.pod.is_some() && matches!(recipe.reading, Reading::RatioOfIncreases { .. }) {
                    return Err(ConfigError::invalid(
                        format!("{block}.pod"),
                        format!(
                            "{measure} is one ratio over all of a pod's series; it has no pod combination"
                        ),
                    ));
                }
                recipe
            }
        };
        if let Some(family) = &t.family
            && !valid_family(family)
        {
            return Err(ConfigError::invalid(
                format!("{block}.family"),
                format!("{family:?} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"),
            ));
        }
        for key in t.matchers.keys() {
            if !valid_family(key) || key.contains(':') {
                return Err(ConfigError::invalid(
                    format!("{block}.match"),
                    format!("{key:?} is not a Prometheus label name"),
                ));
            }
        }
        if let Some(pod) = t.pod {
            recipe.pod = pod;
        }
        if let Some(workload) = t.workload {
            recipe.workload = workload;
        }
        Ok(recipe)
    }
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_family(name: &str) -> bool {
    !name.is_empty()
        && name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || matches!(c, '_' | ':') || (i > 0 && c.is_ascii_digit())
        })
}

impl PodSelection {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if let Some(ns) = &self.namespace
            && ns.is_empty()
        {
            return Err(ConfigError::invalid(
                format!("{at}.namespace"),
                "must not be empty (leave it out for every namespace)",
            ));
        }
        if self.selector.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.selector"),
                "must select the model-server pods, e.g. app.kubernetes.io/name=vllm (an empty selector would scrape every pod)",
            ));
        }
        crate::apimachinery::selector::Selector::parse(&self.selector).map_err(|e| {
            ConfigError::invalid(
                format!("{at}.selector"),
                format!("{:?}: {e}", self.selector),
            )
        })?;
        match &self.port {
            PodPort::Number(0) => {
                return Err(ConfigError::invalid(format!("{at}.port"), "must not be 0"));
            }
            PodPort::Name(name) if name.is_empty() => {
                return Err(ConfigError::invalid(
                    format!("{at}.port"),
                    "needs a container port number or name",
                ));
            }
            _ => {}
        }
        validate_scheme_and_path(at, &self.scheme, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, SourceConfig};

    const VLLM: &str = "kubernetes: {kubeconfig: /tmp/kc}\nsources:\n  llm:\n    inference:\n      preset: vllm\n      pods: {namespace: ml, selector: \"app.kubernetes.io/name=vllm\", port: http}\n";

    fn load(yaml: &str) -> Result<Config, String> {
        Config::from_yaml(yaml, Path::new("test.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn an_inference_source_and_its_metrics_load() {
        let yaml = format!(
            "{VLLM}      extra_labels: {{model: model_name}}\nmetrics:\n  - {{name: waiting, source: llm, measure: waiting_requests}}\n  - {{name: kv, source: llm, measure: kv_cache_usage_ratio, inference: {{workload: max, match: {{model_name: llama}}}}}}\n  - {{name: tokens, source: llm, measure: rate, inference: {{family: \"vllm:generation_tokens_total\"}}}}\n"
        );
        let config = load(&yaml).expect("valid");
        let Some(SourceConfig::Inference(c)) = config.sources.get("llm") else {
            panic!("an inference source")
        };
        let pods = c.pods.as_ref().expect("pods");
        assert_eq!(
            (pods.scheme.as_str(), pods.path.as_str()),
            ("http", "/metrics")
        );
        assert_eq!(c.rate_window(), super::DEFAULT_RATE_WINDOW);
        let number = load(&format!(
            "{}metrics:\n  - {{name: w, source: llm, measure: waiting_requests}}\n",
            VLLM.replace("port: http", "port: 8000")
        ))
        .expect("a port number");
        let Some(SourceConfig::Inference(c)) = number.sources.get("llm") else {
            panic!("an inference source")
        };
        assert_eq!(
            c.pods.as_ref().map(|p| p.port.clone()),
            Some(crate::sources::kubernetes::pods::PodPort::Number(8000))
        );
    }

    #[test]
    fn invalid_inference_configs_are_refused_naming_the_field() {
        let metric = "metrics:\n  - {name: w, source: llm, measure: waiting_requests}\n";
        let kc = "kubernetes: {kubeconfig: /tmp/kc}\n";
        let cases: &[(&str, String, &[&str])] = &[
            (
                "neither pods nor prometheus",
                format!("{kc}sources:\n  llm:\n    inference: {{preset: vllm}}\n{metric}"),
                &["sources.llm.inference", "needs pods"],
            ),
            (
                "both",
                format!("{VLLM}      prometheus: {{url: \"http://p:9090\"}}\n{metric}"),
                &["one of pods or prometheus"],
            ),
            (
                "an empty selector",
                format!(
                    "{}{metric}",
                    VLLM.replace("app.kubernetes.io/name=vllm", "")
                ),
                &["pods.selector", "every pod"],
            ),
            (
                "a selector that does not parse",
                format!(
                    "{}{metric}",
                    VLLM.replace("app.kubernetes.io/name=vllm", "a in (b")
                ),
                &["pods.selector", "a in (b"],
            ),
            (
                "port 0",
                format!("{}{metric}", VLLM.replace("port: http", "port: 0")),
                &["pods.port", "0"],
            ),
            (
                "an unknown preset",
                format!("{}{metric}", VLLM.replace("preset: vllm", "preset: ollama")),
                &["ollama"],
            ),
            (
                "a measure the preset has not",
                format!(
                    "{}metrics:\n  - {{name: q, source: llm, measure: queue_time_seconds}}\n",
                    VLLM
                ),
                &[
                    "metrics[0] (q).measure",
                    "does not apply to a vllm source",
                    "waiting_requests",
                ],
            ),
            (
                "a preset measure without a preset",
                format!("{}{metric}", VLLM.replace("      preset: vllm\n", "")),
                &["metrics[0] (w).measure", "needs the source's preset"],
            ),
            (
                "value without a family",
                format!("{VLLM}metrics:\n  - {{name: v, source: llm, measure: value}}\n"),
                &["inference.family", "needs the family"],
            ),
            (
                "a family on a preset measure",
                format!(
                    "{VLLM}metrics:\n  - {{name: w, source: llm, measure: waiting_requests, inference: {{family: x}}}}\n"
                ),
                &["inference.family", "preset names the family"],
            ),
            (
                "a family that is no metric name",
                format!(
                    "{VLLM}metrics:\n  - {{name: v, source: llm, measure: value, inference: {{family: \"a-b\"}}}}\n"
                ),
                &["inference.family", "not a Prometheus metric name"],
            ),
            (
                "a pod combination on the queue time",
                format!(
                    "{}metrics:\n  - {{name: q, source: llm, measure: queue_time_seconds, inference: {{pod: max}}}}\n",
                    VLLM.replace("preset: vllm", "preset: triton")
                ),
                &["inference.pod", "no pod combination"],
            ),
            (
                "an unknown combination",
                format!(
                    "{VLLM}metrics:\n  - {{name: w, source: llm, measure: waiting_requests, inference: {{workload: median}}}}\n"
                ),
                &["median"],
            ),
            (
                "a GPU measure",
                format!("{VLLM}metrics:\n  - {{name: g, source: llm, measure: gpu_utilization}}\n"),
                &["gpu_utilization", "does not apply"],
            ),
            (
                "a reserved label",
                format!(
                    "{VLLM}metrics:\n  - {{name: w, source: llm, measure: waiting_requests, labels: {{workload: x}}}}\n"
                ),
                &["metrics[0] (w).labels", "\"workload\""],
            ),
            (
                "a reserved extra label",
                format!("{VLLM}      extra_labels: {{namespace: model_name}}\n{metric}"),
                &["extra_labels.namespace", "set by the adapter"],
            ),
            (
                "a rate window under a second",
                format!("{VLLM}      rate_window: 100ms\n{metric}"),
                &["rate_window", "at least 1s"],
            ),
            (
                "a bad scheme",
                format!(
                    "{}{metric}",
                    VLLM.replace("port: http}", "port: http, scheme: grpc}")
                ),
                &["pods.scheme", "grpc"],
            ),
            (
                "an unknown field",
                format!("{VLLM}      endpoints: [\"http://a\"]\n{metric}"),
                &["unknown field `endpoints`"],
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
