//! One pod's scrape read for one metric: its series of the metric's family that pass the label
//! matchers, split by the extra labels and combined into the pod's value. No I/O here.
//!
//! A pod without a series of the family (a server that does not export it, a matcher for a
//! model it does not serve) has no value, never 0: it is an unknown member of its workload.

use std::collections::BTreeMap;

use super::presets::{Combine, Reading};
use crate::sources::exposition::parse::PromSample;
use crate::sources::kubernetes::workloads::PodRef;
use crate::sources::rates::Rates;

/// A counter series: its pod and its name and labels as the server wrote them.
pub type SeriesId = (PodRef, String);

/// One pod's value for each combination of extra-label values its series have.
pub type PodValues = BTreeMap<Vec<String>, Result<f64, String>>;

/// What a metric's reading needs besides the samples.
pub struct Selection<'a> {
    /// `name="value"` pairs every series must carry.
    pub matchers: &'a [(String, String)],
    /// The sample labels copied as extra series labels, in order.
    pub extra_from: &'a [String],
    /// How the pod's series combine.
    pub combine: Combine,
}

impl Selection<'_> {
    fn matches(&self, s: &PromSample<'_>) -> bool {
        self.matchers
            .iter()
            .all(|(k, v)| s.label(k) == Some(v.as_str()))
    }

    fn key(&self, s: &PromSample<'_>) -> Vec<String> {
        self.extra_from
            .iter()
            .map(|l| s.label(l).unwrap_or_default().to_string())
            .collect()
    }

    /// The series of `family` that pass the matchers, grouped by extra-label values.
    fn series<'s, 'b>(
        &self,
        samples: &'s [PromSample<'b>],
        family: &str,
    ) -> BTreeMap<Vec<String>, Vec<&'s PromSample<'b>>> {
        let mut out: BTreeMap<Vec<String>, Vec<&PromSample<'_>>> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name == family && self.matches(s))
        {
            out.entry(self.key(s)).or_default().push(s);
        }
        out
    }
}

/// The pod's values of `reading`, recording its counters into `rates` at `at` (unix seconds).
/// Empty when the pod has no series of the family.
pub fn pod_values(
    reading: &Reading,
    selection: &Selection<'_>,
    pod: &PodRef,
    samples: &[PromSample<'_>],
    rates: &mut Rates<SeriesId>,
    at: f64,
) -> PodValues {
    match reading {
        Reading::Gauge(families) => families
            .iter()
            .map(|f| selection.series(samples, f))
            .find(|s| !s.is_empty())
            .unwrap_or_default()
            .into_iter()
            .map(|(key, series)| {
                let values: Vec<f64> = series
                    .iter()
                    .map(|s| s.value)
                    .filter(|v| v.is_finite())
                    .collect();
                (key, combine(&values, selection.combine, "a finite value"))
            })
            .collect(),
        Reading::Rate(family) => selection
            .series(samples, family)
            .into_iter()
            .map(|(key, series)| {
                let values: Vec<f64> = series
                    .iter()
                    .filter_map(|s| {
                        let id = series_id(pod, s);
                        rates.record(id.clone(), at, s.value);
                        rates.increase(&id).map(|i| i.rate())
                    })
                    .collect();
                (
                    key,
                    combine(&values, selection.combine, "two scrapes in the rate window"),
                )
            })
            .collect(),
        Reading::RatioOfIncreases {
            numerator,
            denominator,
            scale,
        } => {
            let mut increases = |family: &str| -> BTreeMap<Vec<String>, Option<f64>> {
                selection
                    .series(samples, family)
                    .into_iter()
                    .map(|(key, series)| {
                        let mut total = None;
                        for s in series {
                            let id = series_id(pod, s);
                            rates.record(id.clone(), at, s.value);
                            if let Some(i) = rates.increase(&id) {
                                *total.get_or_insert(0.0) += i.by;
                            }
                        }
                        (key, total)
                    })
                    .collect()
            };
            let num = increases(numerator);
            let den = increases(denominator);
            num.into_iter()
                .map(|(key, n)| {
                    let value = match (n, den.get(&key).copied().flatten()) {
                        (Some(n), Some(d)) if d > 0.0 => Ok(n / d * scale),
                        (Some(_), Some(_)) => Err(format!(
                            "no {denominator} in the rate window (nothing completed)"
                        )),
                        (_, None) if !den.contains_key(&key) => {
                            Err(format!("the server exports no {denominator}"))
                        }
                        _ => Err("needs two scrapes in the rate window".to_string()),
                    };
                    (key, value)
                })
                .collect()
        }
    }
}

/// A counter series' identity within its pod: its name and labels as written.
fn series_id(pod: &PodRef, s: &PromSample<'_>) -> SeriesId {
    let mut text = String::with_capacity(64);
    text.push_str(s.name);
    for (k, v) in &s.labels {
        text.push(' ');
        text.push_str(k);
        text.push('=');
        text.push_str(v);
    }
    (pod.clone(), text)
}

/// Combines a pod's known series values.
fn combine(values: &[f64], how: Combine, needed: &str) -> Result<f64, String> {
    if values.is_empty() {
        return Err(format!("no series with {needed}"));
    }
    Ok(match how {
        Combine::Sum => values.iter().sum(),
        Combine::Mean => values.iter().sum::<f64>() / values.len() as f64,
        Combine::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::exposition::parse::parse;
    use crate::sources::inference::presets::Preset;
    use crate::sources::measure::Measure;

    const VLLM_OLD: &str = include_str!("../../../tests/fixtures/vllm-0.4.3-metrics.txt");
    const VLLM_BOTH: &str = include_str!("../../../tests/fixtures/vllm-0.10.2-metrics.txt");
    const TRITON: &str = include_str!("../../../tests/fixtures/triton-2.38.0-metrics.txt");
    const SGLANG: &str = include_str!("../../../tests/fixtures/sglang-0.3.6-0.4.1-metrics.txt");
    const TGI: &str = include_str!("../../../tests/fixtures/tgi-3.3.x-metrics.txt");

    fn pod() -> PodRef {
        PodRef {
            namespace: "ml".into(),
            name: "p".into(),
        }
    }

    /// The preset measure's value of one fixture, no extra labels.
    fn read(preset: Preset, measure: Measure, body: &str) -> Option<Result<f64, String>> {
        let recipe = preset.recipe(measure).expect("recipe");
        let parsed = parse(body);
        let selection = Selection {
            matchers: &[],
            extra_from: &[],
            combine: recipe.pod,
        };
        let mut rates = Rates::new(std::time::Duration::from_secs(30));
        let mut v = pod_values(
            &recipe.reading,
            &selection,
            &pod(),
            &parsed.samples,
            &mut rates,
            1.0,
        );
        v.remove(&Vec::new())
    }

    #[test]
    fn every_fixture_parses_whole_and_every_preset_reads_its_own() {
        for (name, body) in [
            ("vllm-0.4.3", VLLM_OLD),
            ("vllm-0.10.2", VLLM_BOTH),
            ("triton-2.38.0", TRITON),
            ("sglang", SGLANG),
            ("tgi", TGI),
        ] {
            let p = parse(body);
            assert_eq!(p.malformed, 0, "{name}: {:?}", p.first_malformed);
        }
        assert_eq!(
            read(Preset::Vllm, Measure::WaitingRequests, VLLM_OLD),
            Some(Ok(0.0))
        );
        assert_eq!(
            read(Preset::Vllm, Measure::WaitingRequests, VLLM_BOTH),
            Some(Ok(12.0)),
            "engines 0 and 1 add up"
        );
        assert_eq!(
            read(Preset::Vllm, Measure::RunningRequests, VLLM_BOTH),
            Some(Ok(12.0))
        );
        assert_eq!(
            read(Preset::Sglang, Measure::WaitingRequests, SGLANG),
            Some(Ok(2826.0))
        );
        assert_eq!(
            read(Preset::Sglang, Measure::KvCacheUsageRatio, SGLANG),
            Some(Ok(0.28))
        );
        assert_eq!(
            read(Preset::Tgi, Measure::WaitingRequests, TGI),
            Some(Ok(0.0))
        );
        assert_eq!(
            read(Preset::Tgi, Measure::RunningRequests, TGI),
            Some(Ok(0.0))
        );
        assert_eq!(
            read(Preset::Triton, Measure::WaitingRequests, TRITON),
            Some(Ok(0.0))
        );
        assert_eq!(
            read(Preset::Vllm, Measure::WaitingRequests, TGI),
            None,
            "a server without the family has no value"
        );
    }

    #[test]
    fn the_renamed_kv_family_is_read_under_either_name_and_never_twice() {
        // 0.4.3 exports only the old name.
        assert_eq!(
            read(Preset::Vllm, Measure::KvCacheUsageRatio, VLLM_OLD),
            Some(Ok(0.0))
        );
        // 0.10.2 exports both with the same values: the fuller engine, not a sum of four.
        let both = read(Preset::Vllm, Measure::KvCacheUsageRatio, VLLM_BOTH)
            .expect("read")
            .expect("value");
        assert!((both - 0.823_170_731_707_317_1).abs() < 1e-12, "{both}");
        // Only the new name (0.11+): the same value.
        let new_only: String = VLLM_BOTH
            .lines()
            .filter(|l| !l.contains("gpu_cache_usage_perc"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            read(Preset::Vllm, Measure::KvCacheUsageRatio, &new_only),
            Some(Ok(both))
        );
    }

    #[test]
    fn matchers_extra_labels_and_the_queue_time_ratio() {
        let parsed = parse(TRITON);
        let extra = vec!["model".to_string()];
        let recipe = Preset::Triton
            .recipe(Measure::QueueTimeSeconds)
            .expect("recipe");
        let selection = Selection {
            matchers: &[("version".to_string(), "1".to_string())],
            extra_from: &extra,
            combine: recipe.pod,
        };
        let mut rates = Rates::new(std::time::Duration::from_secs(30));
        let first = pod_values(
            &recipe.reading,
            &selection,
            &pod(),
            &parsed.samples,
            &mut rates,
            1.0,
        );
        assert!(
            first
                .values()
                .all(|v| v.as_ref().is_err_and(|e| e.contains("two scrapes"))),
            "{first:?}"
        );
        // Three more densenet requests, which queued 300 µs in all.
        let later = TRITON
            .replace(
                "nv_inference_request_success{model=\"densenet_onnx\",version=\"1\"} 3",
                "nv_inference_request_success{model=\"densenet_onnx\",version=\"1\"} 6",
            )
            .replace(
                "nv_inference_queue_duration_us{model=\"densenet_onnx\",version=\"1\"} 145",
                "nv_inference_queue_duration_us{model=\"densenet_onnx\",version=\"1\"} 445",
            );
        let parsed = parse(&later);
        let second = pod_values(
            &recipe.reading,
            &selection,
            &pod(),
            &parsed.samples,
            &mut rates,
            6.0,
        );
        let densenet = second[&vec!["densenet_onnx".to_string()]].clone();
        assert!((densenet.expect("value") - 100e-6).abs() < 1e-12);
        assert!(
            second[&vec!["simple".to_string()]]
                .as_ref()
                .is_err_and(|e| e.contains("nothing completed")),
            "an idle model has no mean queue time, not 0"
        );
        let none = Selection {
            matchers: &[("version".to_string(), "9".to_string())],
            extra_from: &[],
            combine: Combine::Sum,
        };
        assert!(
            pod_values(
                &recipe.reading,
                &none,
                &pod(),
                &parsed.samples,
                &mut rates,
                7.0
            )
            .is_empty(),
            "a matcher no series passes leaves the pod without a value"
        );
    }

    #[test]
    fn counter_rates_per_series_then_summed() {
        let mut rates = Rates::new(std::time::Duration::from_secs(30));
        let reading = Reading::Rate("vllm:generation_tokens_total".into());
        let selection = Selection {
            matchers: &[],
            extra_from: &[],
            combine: Combine::Sum,
        };
        let at = |t: f64, a: f64, b: f64, rates: &mut Rates<SeriesId>| {
            let body = format!(
                "vllm:generation_tokens_total{{engine=\"0\"}} {a}\nvllm:generation_tokens_total{{engine=\"1\"}} {b}\n"
            );
            let parsed = parse(&body);
            pod_values(&reading, &selection, &pod(), &parsed.samples, rates, t)
        };
        assert!(at(0.0, 100.0, 10.0, &mut rates)[&Vec::new()].is_err());
        assert_eq!(at(2.0, 300.0, 30.0, &mut rates)[&Vec::new()], Ok(110.0));
        // Engine 1 restarted: 30 -> 4 counts as 4.
        assert_eq!(
            at(4.0, 500.0, 4.0, &mut rates)[&Vec::new()],
            Ok((400.0 + 4.0 + 20.0) / 4.0)
        );
    }
}
