//! KEDA trigger metadata, read into one query against the store, shared by the gRPC external
//! scaler and the metrics-api endpoint so both answer the same thing for the same metadata.
//!
//! Keys: `metricName` (required), `labelSelector` (optional, Kubernetes syntax), `targetValue`
//! (required where a target is asked for), `activationValue` (default 0), `aggregate`
//! (`sum` default, `max`, `mean`) for when several series match. KEDA has no activation threshold
//! for external scalers (docs/reference/keda.md §1.4), so activation is ours: active means value > activationValue.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::apimachinery::selector::Selector;
use crate::primitives::quoted_prefix;
use crate::store::{LookupError, MetricsProvider};

/// How several matching series become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Add them (queue depth across queues).
    Sum,
    /// The largest (the oldest age across queues).
    Max,
    /// The arithmetic mean.
    Mean,
}

/// A parsed trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The configured metric.
    pub metric: String,
    /// Which series.
    pub selector: Selector,
    /// The HPA target, when one was given.
    pub target: Option<f64>,
    /// Active when the value is strictly above this.
    pub activation: f64,
    /// How matching series combine.
    pub aggregate: Aggregate,
}

/// A trigger's value and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The aggregated value.
    pub value: f64,
    /// How many series matched.
    pub series: usize,
    /// When the oldest of them was observed.
    pub observed_at: SystemTime,
}

/// Bad metadata, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scaler metadata {key}: {message}")]
pub struct TriggerError {
    /// The offending key.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Why a trigger has no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TriggerLookupError {
    /// Unknown metric, stale value or failing source.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The selector matched no series of a metric for which that is not an observed empty
    /// backlog ([`crate::store::MetricInfo::empty_means_zero`]): there is nothing to report,
    /// and 0 would be made up.
    #[error(
        "no series of metric {} matches the label selector {}",
        quoted_prefix(metric),
        quoted_prefix(selector)
    )]
    NoSeries {
        /// The metric.
        metric: String,
        /// The selector as given.
        selector: String,
    },
}

fn number(
    metadata: &HashMap<String, String>,
    key: &'static str,
) -> Result<Option<f64>, TriggerError> {
    match metadata.get(key) {
        None => Ok(None),
        Some(text) => match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(TriggerError {
                key,
                message: format!("{} is not a number", quoted_prefix(text)),
            }),
        },
    }
}

impl Trigger {
    /// Reads the metadata; `need_target` makes `targetValue` required.
    ///
    /// # Errors
    /// [`TriggerError`] naming the missing or malformed key.
    pub fn parse(
        metadata: &HashMap<String, String>,
        need_target: bool,
    ) -> Result<Trigger, TriggerError> {
        let metric = metadata
            .get("metricName")
            .filter(|m| !m.trim().is_empty())
            .ok_or(TriggerError {
                key: "metricName",
                message: "is required (the adapter's metric name)".into(),
            })?
            .trim()
            .to_ascii_lowercase();
        let selector = match metadata.get("labelSelector") {
            None => Selector::everything(),
            Some(s) => Selector::parse(s).map_err(|e| TriggerError {
                key: "labelSelector",
                message: e.to_string(),
            })?,
        };
        let target = number(metadata, "targetValue")?;
        match target {
            None if need_target => {
                return Err(TriggerError {
                    key: "targetValue",
                    message: "is required (the HPA target per replica)".into(),
                });
            }
            Some(t) if t <= 0.0 => {
                return Err(TriggerError {
                    key: "targetValue",
                    message: format!("{t} must be greater than 0"),
                });
            }
            _ => {}
        }
        let activation = number(metadata, "activationValue")?.unwrap_or(0.0);
        let aggregate = match metadata
            .get("aggregate")
            .map(|a| a.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("sum") => Aggregate::Sum,
            Some("max") => Aggregate::Max,
            Some("mean") | Some("avg") | Some("average") => Aggregate::Mean,
            Some(other) => {
                return Err(TriggerError {
                    key: "aggregate",
                    message: format!("{} is not one of sum, max, mean", quoted_prefix(other)),
                });
            }
        };
        Ok(Trigger {
            metric,
            selector,
            target,
            activation,
            aggregate,
        })
    }

    /// The trigger's value now, from memory.
    ///
    /// # Errors
    /// [`TriggerLookupError`] for an unknown metric, stale or failing data, or no matching series.
    pub fn value(
        &self,
        provider: &dyn MetricsProvider,
        namespace: &str,
        now: SystemTime,
    ) -> Result<f64, TriggerLookupError> {
        self.reading(provider, namespace, now).map(|r| r.value)
    }

    /// The value with how many series made it and when the oldest of them was observed.
    ///
    /// # Errors
    /// As [`Trigger::value`].
    pub fn reading(
        &self,
        provider: &dyn MetricsProvider,
        namespace: &str,
        now: SystemTime,
    ) -> Result<Reading, TriggerLookupError> {
        let values = provider.get(namespace, &self.metric, &self.selector, now)?;
        let Some(observed_at) = values.iter().map(|v| v.observed_at).min() else {
            // A list or sorted-set pattern that matches nothing on a healthy source is an empty
            // backlog (Redis deleted the keys as they emptied): 0, and inactive.
            if let Some(observed_at) = provider.observed_empty(namespace, &self.metric, now) {
                return Ok(Reading {
                    value: 0.0,
                    series: 0,
                    observed_at,
                });
            }
            return Err(TriggerLookupError::NoSeries {
                metric: self.metric.clone(),
                selector: format!("{:?}", self.selector),
            });
        };
        let n = values.len() as f64;
        let it = values.iter().map(|v| v.value);
        let value = match self.aggregate {
            Aggregate::Sum => it.sum(),
            Aggregate::Max => it.fold(f64::NEG_INFINITY, f64::max),
            Aggregate::Mean => it.sum::<f64>() / n,
        };
        Ok(Reading {
            value,
            series: values.len(),
            observed_at,
        })
    }

    /// Whether `value` activates the workload (scale from zero).
    pub fn is_active(&self, value: f64) -> bool {
        value > self.activation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn metadata_is_read_with_defaults() {
        let t = Trigger::parse(
            &md(&[("metricName", "Queue_Len"), ("targetValue", "10")]),
            true,
        )
        .expect("valid");
        assert_eq!(t.metric, "queue_len");
        assert_eq!(t.target, Some(10.0));
        assert_eq!(t.activation, 0.0);
        assert_eq!(t.aggregate, Aggregate::Sum);
        assert!(t.is_active(0.5) && !t.is_active(0.0));
    }

    #[test]
    fn bad_metadata_names_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("targetValue", "1")], "metricName"),
            (&[("metricName", "q")], "targetValue"),
            (&[("metricName", "q"), ("targetValue", "x")], "targetValue"),
            (&[("metricName", "q"), ("targetValue", "0")], "targetValue"),
            (
                &[
                    ("metricName", "q"),
                    ("targetValue", "1"),
                    ("activationValue", "soon"),
                ],
                "activationValue",
            ),
            (
                &[
                    ("metricName", "q"),
                    ("targetValue", "1"),
                    ("aggregate", "median"),
                ],
                "aggregate",
            ),
            (
                &[
                    ("metricName", "q"),
                    ("targetValue", "1"),
                    ("labelSelector", "a in ("),
                ],
                "labelSelector",
            ),
        ];
        for (metadata, key) in cases {
            let err = Trigger::parse(&md(metadata), true).expect_err(key);
            assert_eq!(err.key, *key, "{err}");
        }
    }

    /// Found by the `keda_trigger` fuzz target (fuzz/regressions/keda_trigger/): a long
    /// `aggregate` value was echoed whole in its error.
    #[test]
    fn errors_quote_a_bounded_prefix_of_a_long_value() {
        let long = "{".repeat(10_000);
        for key in ["aggregate", "targetValue", "activationValue"] {
            let err = Trigger::parse(
                &md(&[("metricName", "q"), ("targetValue", "1"), (key, &long)]),
                true,
            )
            .expect_err(key);
            assert_eq!(err.key, key);
            let text = err.to_string();
            assert!(text.len() < 300, "{key}: {} bytes", text.len());
            assert!(text.contains("(10000 bytes)"), "{text}");
        }
        let none = TriggerLookupError::NoSeries {
            metric: "m".repeat(5_000),
            selector: "a=b,".repeat(5_000),
        };
        assert!(none.to_string().len() < 400, "{none}");
    }

    /// The fuzz find itself, read as the `keda_trigger` target reads it (`key=value` lines).
    #[test]
    fn the_fuzz_regression_input_gives_a_bounded_error() {
        let data = include_bytes!("../../../fuzz/regressions/keda_trigger/long-aggregate-echoed");
        let text = String::from_utf8_lossy(data);
        let metadata: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for need_target in [false, true] {
            if let Err(e) = Trigger::parse(&metadata, need_target) {
                assert!(e.to_string().len() < 4096, "{} bytes", e.to_string().len());
            }
        }
    }
}
