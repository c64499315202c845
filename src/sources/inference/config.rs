//! The `inference:` blocks of the configuration: which model-server pods are scraped (under
//! `sources`) and what a metric reads from them (under `metrics`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::presets::{Combine, Preset, Reading, Recipe};
use crate::k8s::selector::validate_key;
use crate::model::Measure;
use crate::primitives::{ConfigError, HumanDuration};
use crate::sources::MetricConfig;
use crate::sources::exposition::query::PrometheusQuery;
use crate::sources::kubernetes::pods::PodPort;
use crate::sources::kubernetes::workloads::RESERVED_LABELS;

/// Default rate window: long enough for several polls at the default interval, short enough
/// that a burst shows within half a minute.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(30);

/// Model-server pods (`sources.<name>.inference`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Time allowed to each pod's scrape. Default: 80 % of the poll timeout, so one stuck pod
    /// fails alone.
    #[serde(default)]
    pub scrape_timeout: Option<HumanDuration>,
    /// Counter rates and queue times are computed over the scrapes of this window. Default 30s.
    #[serde(default)]
    pub rate_window: Option<HumanDuration>,
    /// Extra series labels copied from the server's sample labels: `model: model_name`.
    #[serde(default)]
    pub extra_labels: BTreeMap<String, String>,
    /// PEM CA for `https` pods (or Prometheus) behind a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Largest answer read from one pod or from Prometheus, in bytes. Default 32 MiB.
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// Overrides the global `poll_interval`.
    #[serde(default)]
    pub poll_interval: Option<HumanDuration>,
    /// Overrides the global `poll_timeout`.
    #[serde(default)]
    pub poll_timeout: Option<HumanDuration>,
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
    /// The per-pod scrape timeout, given the source's poll timeout.
    pub fn scrape_timeout(&self, poll_timeout: Duration) -> Duration {
        self.scrape_timeout
            .map_or(poll_timeout.mul_f64(0.8), |d| d.0)
    }

    /// The rate window.
    pub fn rate_window(&self) -> Duration {
        self.rate_window.map_or(DEFAULT_RATE_WINDOW, |d| d.0)
    }

    /// The extra labels as (series label, sample label) pairs, in a stable order.
    pub fn extra_labels(&self) -> (Vec<String>, Vec<String>) {
        self.extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .unzip()
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
        if self.max_response_bytes == Some(0) {
            return Err(ConfigError::invalid(
                format!("{at}.max_response_bytes"),
                "must be greater than zero",
            ));
        }
        let scrape = self.scrape_timeout(poll_timeout);
        if scrape.is_zero() || scrape > poll_timeout {
            return Err(ConfigError::invalid(
                format!("{at}.scrape_timeout"),
                format!(
                    "must be greater than zero and at most the poll timeout ({poll_timeout:?})"
                ),
            ));
        }
        if self.rate_window() < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                format!("{at}.rate_window"),
                "must be at least 1s (a rate needs two scrapes inside it)",
            ));
        }
        for (label, from) in &self.extra_labels {
            validate_key(label).map_err(|e| {
                ConfigError::invalid(format!("{at}.extra_labels"), format!("{label:?} {e}"))
            })?;
            if RESERVED_LABELS.contains(&label.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.extra_labels.{label}"),
                    "is set by the adapter itself; pick another name",
                ));
            }
            if from.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.extra_labels.{label}"),
                    "needs the server's label to copy, e.g. model_name",
                ));
            }
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
        m: &MetricConfig,
        target: Option<&InferenceTarget>,
        at: &str,
    ) -> Result<Recipe, ConfigError> {
        let default = InferenceTarget::default();
        let t = target.unwrap_or(&default);
        let block = format!("{at}.inference");
        let mut recipe = match m.measure {
            Measure::Value | Measure::Rate => {
                let Some(family) = &t.family else {
                    return Err(ConfigError::invalid(
                        format!("{block}.family"),
                        format!("measure {} needs the family to read", m.measure),
                    ));
                };
                let reading = if m.measure == Measure::Value {
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
        crate::k8s::selector::Selector::parse(&self.selector).map_err(|e| {
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
        if !matches!(self.scheme.as_str(), "http" | "https") {
            return Err(ConfigError::invalid(
                format!("{at}.scheme"),
                format!("{:?} must be http or https", self.scheme),
            ));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::invalid(
                format!("{at}.path"),
                format!("{:?} must start with '/'", self.path),
            ));
        }
        Ok(())
    }
}
