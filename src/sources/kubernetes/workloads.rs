//! From per-pod values to per-workload series, for the kinds that read pods (`dcgm`,
//! `inference`): the keys ([`PodRef`], [`PodKey`], [`SeriesKey`]), how pods combine
//! ([`WorkloadAggregate`], [`per_group`]) and the series labels every such kind sets. No I/O.
//!
//! A workload whose pods are all unknown is an error series, a sum with an unknown member is
//! unknown (a partial sum would be invented), and a pod that belongs to no workload yet (its
//! owner not in the cache) is left out, never guessed.

use std::collections::BTreeMap;

use super::owners::Workload;
use crate::apimachinery::label::validate_key;
use crate::primitives::ConfigError;

/// Series label: the workload's namespace. A request sees only its own namespace's series.
pub const NAMESPACE_LABEL: &str = "namespace";
/// Series label: the workload's name (the Deployment, StatefulSet, Job, ... that owns the pods;
/// a name over 63 characters is served encoded: [`crate::apimachinery::label::encode_value`]).
pub const WORKLOAD_LABEL: &str = "workload";
/// Series label: the workload's kind (`Deployment`, `StatefulSet`, `Job`, ...).
pub const WORKLOAD_KIND_LABEL: &str = "workload_kind";
/// Labels every per-workload series sets itself; configuration cannot use them.
pub const RESERVED_LABELS: [&str; 3] = [NAMESPACE_LABEL, WORKLOAD_LABEL, WORKLOAD_KIND_LABEL];

/// A pod, by namespace and name: what a GPU is allocated to, what a model server runs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// How pods combine into one workload value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadAggregate {
    /// Mean over pods (of each pod's mean over its GPUs): "keep GPUs at 70 % busy".
    Mean,
    /// The busiest pod.
    Max,
    /// Sum over pods; unknown while any pod's value is unknown (a partial sum would be invented).
    Sum,
    /// How many GPUs (or MIG instances) the workload holds.
    Gpus,
}

/// A pod and the values of the configured extra labels of its series (a GPU model, a served
/// model name): pods are combined per key, so a workload spread over two GPU models gives one
/// series per model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// The pod.
    pub pod: PodRef,
    /// Extra label values, in the configured order.
    pub extra: Vec<String>,
}

/// One pod's value of a signal, and how many members (GPUs, series) it has.
#[derive(Debug, Clone, PartialEq)]
pub struct PodValue {
    /// The pod's value; `None` if it has none this poll (unknown, never 0).
    pub value: Option<f64>,
    /// GPUs (or series) attributed to the pod.
    pub gpus: usize,
}

/// Combines the pods of each group (`group_of` returns `None` for pods that belong to no group yet,
/// e.g. whose owner is not resolved: they are left out, not guessed).
///
/// # Errors
/// Per group: when none of its pods has a value.
pub fn per_group<G: Ord + Clone>(
    pods: &BTreeMap<PodKey, PodValue>,
    group_of: impl Fn(&PodKey) -> Option<G>,
    aggregate: WorkloadAggregate,
) -> BTreeMap<G, Result<f64, String>> {
    let mut groups: BTreeMap<G, Vec<&PodValue>> = BTreeMap::new();
    for (pod, v) in pods {
        if let Some(g) = group_of(pod) {
            groups.entry(g).or_default().push(v);
        }
    }
    groups
        .into_iter()
        .map(|(g, members)| {
            let known: Vec<f64> = members.iter().filter_map(|m| m.value).collect();
            let value = match aggregate {
                WorkloadAggregate::Gpus => Ok(members.iter().map(|m| m.gpus).sum::<usize>() as f64),
                _ if known.is_empty() => Err(format!(
                    "none of the {} pod(s) reported the signal",
                    members.len()
                )),
                WorkloadAggregate::Mean => Ok(known.iter().sum::<f64>() / known.len() as f64),
                WorkloadAggregate::Max => {
                    Ok(known.iter().copied().fold(f64::NEG_INFINITY, f64::max))
                }
                WorkloadAggregate::Sum if known.len() < members.len() => Err(format!(
                    "{} of the {} pod(s) did not report the signal, so their sum is unknown",
                    members.len() - known.len(),
                    members.len()
                )),
                WorkloadAggregate::Sum => Ok(known.iter().sum()),
            };
            (g, value)
        })
        .collect()
}

/// A workload and the extra label values it is split by: one series each.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    /// The workload.
    pub workload: Workload,
    /// Its extra label values as the exporter or server reports them: [`crate::model::Labels`]
    /// makes them selectable, so two raw values stay two series even where their readable
    /// parts look alike (`a:b`, `a/b`).
    pub extra: Vec<String>,
}

impl SeriesKey {
    /// The series labels: `base` (the metric's own) plus namespace, workload, workload kind and
    /// each extra label under its configured name (values encoded where they are not valid label
    /// values, such as a workload name over 63 characters: [`crate::apimachinery::label::encode_value`]).
    pub fn labels(
        &self,
        base: &crate::model::Labels,
        extra_names: &[String],
    ) -> crate::model::Labels {
        let mut labels = base.clone();
        labels.insert(NAMESPACE_LABEL.into(), self.workload.namespace.clone());
        labels.insert(WORKLOAD_LABEL.into(), self.workload.name.clone());
        labels.insert(WORKLOAD_KIND_LABEL.into(), self.workload.kind.clone());
        for (name, v) in extra_names.iter().zip(&self.extra) {
            labels.insert(name.clone(), v.clone());
        }
        labels
    }
}

/// Checks a source's `extra_labels` (series label -> the scraped label it copies, such as
/// `example`) found at `at`: selectable names, none of the labels the adapter sets.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the label.
pub fn validate_extra_labels(
    at: &str,
    extra: &BTreeMap<String, String>,
    example: &str,
) -> Result<(), ConfigError> {
    for (label, from) in extra {
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
                format!("needs the scraped label to copy, e.g. {example}"),
            ));
        }
    }
    Ok(())
}

/// Checks a per-workload metric's own `labels` (at `at`): none may be one its series set from
/// the workload or the extra labels.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the label.
pub fn validate_metric_labels(
    at: &str,
    labels: &BTreeMap<String, String>,
    extra: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for key in labels.keys() {
        if RESERVED_LABELS.contains(&key.as_str()) || extra.contains_key(key) {
            return Err(ConfigError::invalid(
                format!("{at}.labels"),
                format!("must not set {key:?}: every series gets it from its workload"),
            ));
        }
    }
    Ok(())
}
