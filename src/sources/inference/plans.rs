//! One poll's arithmetic, without I/O: each metric's plan read over the pods' scrapes, pods
//! combined per workload, samples out. The source ([`super::InferenceSource`]) does the
//! fetching and the owner lookups and hands this its scrapes; benches and tests drive it
//! directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::{InferenceSourceConfig, InferenceTarget};
use super::presets::{Combine, Reading};
use super::reading::SeriesId;
use super::reading::{Selection, pod_values};
use crate::model::{Labels, Sample, SeriesError};
use crate::primitives::ConfigError;
use crate::sources::exposition::parse::PromSample;
use crate::sources::kubernetes::owners::Workload;
use crate::sources::kubernetes::workloads::{
    PodKey, PodRef, PodValue, SeriesKey, WorkloadAggregate, per_group,
};
use crate::sources::measure::Measure;
use crate::sources::metric::MetricConfig;
use crate::sources::rates::Rates;

/// One pod's scrape in a poll.
pub struct PodScrape<'a> {
    /// The pod.
    pub pod: PodRef,
    /// Its metadata, when the source watches the pod itself (owner resolution).
    pub meta: Option<&'a ObjectMeta>,
    /// Where it was read, for messages.
    pub endpoint: String,
    /// Its samples, or why there are none.
    pub outcome: Result<Vec<PromSample<'a>>, String>,
    /// When (unix seconds): the scrape's end, or the oldest sample time Prometheus relayed.
    pub at: f64,
    /// The relayed sample time, where older than the poll.
    pub observed_at: Option<SystemTime>,
}

/// One metric: what it reads and how, and the counters it has seen.
struct Plan {
    name: Arc<str>,
    measure: Measure,
    labels: Labels,
    reading: Reading,
    matchers: Vec<(String, String)>,
    pod: Combine,
    workload: WorkloadAggregate,
    rates: Rates<SeriesId>,
    /// The extra-label values each pod's series had at its last good scrape: when the pod
    /// fails, these are the series it is an unknown member of.
    last_keys: HashMap<PodRef, Vec<Vec<String>>>,
}

/// Every metric of one source, with what they remember between polls (counter scrapes, each
/// pod's last series).
pub struct Plans {
    plans: Vec<Plan>,
    extra_names: Vec<String>,
    extra_from: Vec<String>,
}

impl Plans {
    /// The plans of `metrics`, read from a source configured as `conn`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when a metric does not fit the source (checked at load too).
    pub fn new(
        conn: &InferenceSourceConfig,
        metrics: &[(&MetricConfig, Option<&InferenceTarget>)],
    ) -> Result<Self, ConfigError> {
        let mut plans = Vec::new();
        for (i, (m, target)) in metrics.iter().enumerate() {
            let recipe = conn.recipe(m.measure, *target, &format!("metrics[{i}] ({})", m.name))?;
            plans.push(Plan {
                name: Arc::from(m.name.as_str()),
                measure: m.measure,
                labels: Labels::from(&m.labels),
                reading: recipe.reading,
                matchers: target
                    .map(|t| t.matchers.clone().into_iter().collect())
                    .unwrap_or_default(),
                pod: recipe.pod,
                workload: match recipe.workload {
                    Combine::Sum => WorkloadAggregate::Sum,
                    Combine::Mean => WorkloadAggregate::Mean,
                    Combine::Max => WorkloadAggregate::Max,
                },
                rates: Rates::new(conn.rate_window()),
                last_keys: HashMap::new(),
            });
        }
        let (extra_names, extra_from) = conn.scrape.extra_labels();
        Ok(Plans {
            plans,
            extra_names,
            extra_from,
        })
    }

    /// The families the metrics read (what a Prometheus query must ask for).
    pub fn families(&self) -> Vec<&str> {
        self.plans
            .iter()
            .flat_map(|p| match &p.reading {
                Reading::Gauge(f) => f.iter().map(String::as_str).collect(),
                Reading::Rate(f) => vec![f.as_str()],
                Reading::RatioOfIncreases {
                    numerator,
                    denominator,
                    ..
                } => vec![numerator.as_str(), denominator.as_str()],
            })
            .collect()
    }

    /// Every metric's series from one poll's scrapes; `workload_of` names each pod's workload
    /// (`None`: not resolved yet, the pod is left out).
    pub fn read(
        &mut self,
        scrapes: &[PodScrape<'_>],
        workload_of: impl Fn(&PodScrape<'_>) -> Option<Workload>,
    ) -> Vec<Sample> {
        let workloads: HashMap<&PodRef, Workload> = scrapes
            .iter()
            .filter_map(|s| Some((&s.pod, workload_of(s)?)))
            .collect();
        let seen: BTreeSet<&PodRef> = scrapes.iter().map(|s| &s.pod).collect();
        let now = unix_now();

        let mut out = Vec::new();
        for plan in &mut self.plans {
            let selection = Selection {
                matchers: &plan.matchers,
                extra_from: &self.extra_from,
                combine: plan.pod,
            };
            let mut per: BTreeMap<PodKey, PodValue> = BTreeMap::new();
            let mut failed: Vec<&PodRef> = Vec::new();
            let mut observed: BTreeMap<PodKey, SystemTime> = BTreeMap::new();
            for s in scrapes {
                let Ok(samples) = &s.outcome else {
                    failed.push(&s.pod);
                    continue;
                };
                let values = pod_values(
                    &plan.reading,
                    &selection,
                    &s.pod,
                    samples,
                    &mut plan.rates,
                    s.at,
                );
                if values.is_empty() {
                    // The pod answered without the family: unknown, under its last keys.
                    failed.push(&s.pod);
                    continue;
                }
                plan.last_keys
                    .insert(s.pod.clone(), values.keys().cloned().collect());
                for (extra, value) in values {
                    let key = PodKey {
                        pod: s.pod.clone(),
                        extra,
                    };
                    if let Some(at) = s.observed_at {
                        observed.insert(key.clone(), at);
                    }
                    per.insert(
                        key,
                        PodValue {
                            value: value.ok(),
                            gpus: 1,
                        },
                    );
                }
            }
            // Unknown pods join the series they had last; a pod never read joins every series
            // of its workload (or the one without extra values), so a sum is never partial.
            for pod in failed {
                let keys = match plan.last_keys.get(pod) {
                    Some(keys) => keys.clone(),
                    None => {
                        let mine = workloads.get(pod);
                        let mut keys: BTreeSet<Vec<String>> = per
                            .keys()
                            .filter(|k| mine.is_some() && workloads.get(&k.pod) == mine)
                            .map(|k| k.extra.clone())
                            .collect();
                        if keys.is_empty() {
                            keys.insert(vec![String::new(); self.extra_from.len()]);
                        }
                        keys.into_iter().collect()
                    }
                };
                for extra in keys {
                    per.entry(PodKey {
                        pod: pod.clone(),
                        extra,
                    })
                    .or_insert(PodValue {
                        value: None,
                        gpus: 1,
                    });
                }
            }
            plan.last_keys.retain(|p, _| seen.contains(p));
            plan.rates.prune(now);

            let group_of = |key: &PodKey| {
                Some(SeriesKey {
                    workload: workloads.get(&key.pod)?.clone(),
                    extra: key.extra.clone(),
                })
            };
            let mut group_observed: BTreeMap<SeriesKey, SystemTime> = BTreeMap::new();
            for (key, at) in &observed {
                if let Some(g) = group_of(key) {
                    let t = group_observed.entry(g).or_insert(*at);
                    *t = (*t).min(*at);
                }
            }
            for (key, value) in per_group(&per, group_of, plan.workload) {
                let labels = key.labels(&plan.labels, &self.extra_names);
                out.push(Sample {
                    observed_at: group_observed.get(&key).copied(),
                    ..Sample::new(
                        plan.name.clone(),
                        Arc::new(labels),
                        value.map_err(|e| {
                            SeriesError::new(format!(
                                "{} of the workload's model-server pods: {e}",
                                plan.measure
                            ))
                        }),
                    )
                });
            }
        }
        out
    }
}

/// Now, in unix seconds (the time base of counter scrapes).
pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
