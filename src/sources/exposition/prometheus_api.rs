//! A Prometheus instant query (`GET /api/v1/query`) and its vector answer, for sources that
//! read what a Prometheus already scrapes instead of scraping every target themselves.
//!
//! An instant query answers the newest sample within Prometheus' lookback (5 minutes by
//! default) but stamps it with the evaluation time, so [`series_and_times`] also asks for
//! `timestamp(...)` of each name's samples, tagged with [`SAMPLE_OF`] (per name, because the
//! function drops `__name__` and two names would clash), read back with [`unix_time`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::fetch::{Fetch, get_text};
use super::parse::PromSample;
use crate::primitives::{ConfigError, redact_url};

/// Reading through a Prometheus that already scrapes the targets (`prometheus:` of a source).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusQuery {
    /// `http(s)://prometheus:9090` (the HTTP API's base).
    pub url: String,
    /// PromQL label matchers that pick the targets' series, e.g. `job="dcgm-exporter"`.
    #[serde(default)]
    pub matchers: Option<String>,
}

impl PrometheusQuery {
    /// Checks the block found at `at`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the URL when it is not http(s).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                format!("{at}.url"),
                format!(
                    "{:?} must start with http:// or https://",
                    redact_url(&self.url)
                ),
            ));
        }
        Ok(())
    }
}

/// The label that tags a `timestamp(...)` answer with the metric it is the sample time of
/// (per name, because `timestamp` drops `__name__` and two names would clash).
pub const SAMPLE_OF: &str = "qma_sample_of";

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<VectorSample>,
}

/// One series of a vector answer.
#[derive(Debug, Deserialize)]
pub struct VectorSample {
    /// Its labels, `__name__` included.
    pub metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    pub value: (f64, String),
}

/// The PromQL query for the series of `names` and the `up` of their targets, narrowed by
/// `matchers` (e.g. `job="vllm"`), and each name's sample times:
/// `{__name__=~"a|b|up",m} or label_replace(timestamp({__name__="a",m}), SAMPLE_OF, "a", ...)`.
/// Names are matched as `__name__` values, so names with `:` (`vllm:...`) need no escaping.
pub fn series_and_times(names: &[&str], matchers: Option<&str>) -> String {
    let mut names: Vec<&str> = names.to_vec();
    names.sort_unstable();
    names.dedup();
    let matchers = matchers.map(str::trim).filter(|m| !m.is_empty());
    let with = |selector: String| match matchers {
        Some(m) => format!("{{{selector},{m}}}"),
        None => format!("{{{selector}}}"),
    };
    let mut promql = with(format!("__name__=~\"{}|up\"", names.join("|")));
    for name in names {
        let series = with(format!("__name__=\"{name}\""));
        promql.push_str(&format!(
            " or label_replace(timestamp({series}), \"{SAMPLE_OF}\", \"{name}\", \"__name__\", \".*\")"
        ));
    }
    promql
}

/// Runs `promql` against the Prometheus at `url`.
///
/// # Errors
/// When Prometheus cannot be reached or answers an error or something else than a vector: the
/// source as a whole is down then.
pub async fn instant(
    client: &reqwest::Client,
    url: &str,
    promql: &str,
    fetch: Fetch,
) -> Result<Vec<VectorSample>, String> {
    let mut endpoint = reqwest::Url::parse(&format!("{}/api/v1/query", url.trim_end_matches('/')))
        .map_err(|e| format!("bad Prometheus URL: {e}"))?;
    endpoint.query_pairs_mut().append_pair("query", promql);
    // Prometheus explains a bad query in a JSON body with a 4xx status: read it either way.
    let (status, body) = get_text(client.get(endpoint), fetch).await?;
    vector(&body).map_err(|e| format!("{e} (HTTP {status})"))
}

/// Reads a `/api/v1/query` answer body.
///
/// # Errors
/// When the body is not a successful vector answer.
pub fn vector(body: &str) -> Result<Vec<VectorSample>, String> {
    let response: Response =
        serde_json::from_str(body).map_err(|e| format!("Prometheus answer is not JSON: {e}"))?;
    if response.status != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            response.status,
            response.error.unwrap_or_default()
        ));
    }
    let data = response.data.ok_or("Prometheus answer has no data")?;
    if data.result_type != "vector" {
        return Err(format!(
            "Prometheus answered a {}, not a vector",
            data.result_type
        ));
    }
    Ok(data.result)
}

/// One scrape target's part of a vector answer.
#[derive(Debug, Default)]
pub struct TargetAnswer<'a> {
    /// Its `up`, if the answer has one.
    pub up: Option<bool>,
    /// Its samples (borrowing the answer), `__name__` as the name and not among the labels.
    pub samples: Vec<PromSample<'a>>,
    /// Samples whose value did not parse, as `name: value "..."`.
    pub unreadable: Vec<String>,
    /// The oldest sample time (unix seconds) among its samples, from `timestamp(...)`.
    pub oldest: Option<f64>,
}

/// Splits a vector answer per target as `target_of` names them (by `instance`, by pod);
/// series it names no target for are counted in the second value.
pub fn split_by<'a, K: Ord>(
    result: &'a [VectorSample],
    target_of: impl Fn(&'a BTreeMap<String, String>) -> Option<K>,
) -> (BTreeMap<K, TargetAnswer<'a>>, usize) {
    let mut targets: BTreeMap<K, TargetAnswer<'a>> = BTreeMap::new();
    let mut unattributed = 0;
    for s in result {
        let Some(key) = target_of(&s.metric) else {
            unattributed += 1;
            continue;
        };
        let name = s.metric.get("__name__").map_or("", String::as_str);
        let target = targets.entry(key).or_default();
        let Ok(value) = s.value.1.parse::<f64>() else {
            target
                .unreadable
                .push(format!("{name}: value {:?}", s.value.1));
            continue;
        };
        if s.metric.contains_key(SAMPLE_OF) {
            // The time Prometheus observed one of this target's samples, in unix seconds.
            if value.is_finite() {
                target.oldest = Some(target.oldest.map_or(value, |o: f64| o.min(value)));
            }
            continue;
        }
        if name == "up" {
            target.up = Some(value >= 1.0);
            continue;
        }
        target.samples.push(PromSample {
            name,
            labels: s
                .metric
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            value,
        });
    }
    (targets, unattributed)
}

/// A Prometheus sample timestamp (unix seconds, fractional) as a time; `None` before the epoch.
pub fn unix_time(secs: f64) -> Option<SystemTime> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_every_family_and_up_and_asks_for_sample_times_per_name() {
        let q = series_and_times(
            &["vllm:num_requests_waiting", "B", "B"],
            Some(" job=\"vllm\" "),
        );
        assert!(
            q.starts_with("{__name__=~\"B|vllm:num_requests_waiting|up\",job=\"vllm\"} or "),
            "{q}"
        );
        assert!(
            q.contains(" or label_replace(timestamp({__name__=\"vllm:num_requests_waiting\",job=\"vllm\"}), \"qma_sample_of\", \"vllm:num_requests_waiting\", \"__name__\", \".*\")"),
            "{q}"
        );
        assert_eq!(
            q.matches("timestamp(").count(),
            2,
            "once per name, never for up: {q}"
        );
        let bare = series_and_times(&["B"], None);
        assert!(bare.starts_with("{__name__=~\"B|up\"} or "), "{bare}");
        assert!(bare.contains("timestamp({__name__=\"B\"})"), "{bare}");
    }
}
