//! The series a Redis source polls and their round-one commands, planned once per set of keys
//! and reused by every poll until discovery changes the keys.
//!
//! Each series is one metric over one key (an exact key, or one a pattern's discovery found);
//! what it sends and how its replies become a value is the `reads` module's, per key type.

use std::collections::HashSet;
use std::sync::Arc;

use super::batch::Batch;
use super::config::{KEY_LABEL_FULL, RedisTarget};
use super::discovery::{Discovery, wildcard_part};
use super::reads::{Planned, SeriesRead};
use crate::model::Labels;
use crate::sources::measure::Measure;
use crate::sources::metric::MetricConfig;

/// One configured metric as a Redis source reads it.
#[derive(Debug, Clone)]
pub struct MetricPlan {
    pub name: String,
    pub labels: Labels,
    pub target: RedisTarget,
    pub measure: Measure,
}

impl MetricPlan {
    /// Metric `m` as read through `target`, its `redis:` block (`None`: not this kind's).
    pub fn of(m: &MetricConfig, target: Option<&RedisTarget>) -> Option<MetricPlan> {
        Some(MetricPlan {
            name: m.name.clone(),
            labels: m.labels.clone().into_iter().collect(),
            target: target?.clone(),
            measure: m.measure,
        })
    }
}

/// Every series of a source with its round-one plan, and the round-one batch itself.
pub struct Plan {
    pub series: Vec<PlannedSeries>,
    pub first: Batch,
    /// Where round one's `TIME` is: every age is measured on the server's clock.
    pub time_idx: usize,
    /// Where round one's `ROLE` is, for a topology that checks it.
    pub role_idx: Option<usize>,
}

/// One metric over one key.
pub struct PlannedSeries {
    /// Its metric's index in the source's metric list.
    pub metric: usize,
    pub metric_name: Arc<str>,
    /// Shared by the series of every metric over the same key.
    pub key: Arc<str>,
    pub labels: Arc<Labels>,
    pub planned: Planned,
}

impl PlannedSeries {
    /// How this series is read, in database `db`.
    pub fn read<'a>(&'a self, metrics: &'a [MetricPlan], db: i64) -> SeriesRead<'a> {
        let m = &metrics[self.metric];
        SeriesRead {
            target: &m.target,
            measure: m.measure,
            key: &self.key,
            db,
        }
    }
}

impl Plan {
    /// Plans every series of `metrics`: exact keys, and the keys `discovery` holds for each
    /// pattern; `checks_role` asks for a `ROLE` in round one.
    pub fn new(metrics: &[MetricPlan], discovery: &Discovery, checks_role: bool, db: i64) -> Plan {
        let mut first = Batch::new();
        let time_idx = first.add(&[b"TIME"]);
        let role_idx = checks_role.then(|| first.add(&[b"ROLE"]));
        let mut series = Vec::new();
        // Metrics over the same keys with the same labels (a queue's length and its oldest
        // age) share one copy of each label set: a series' labels are most of its memory.
        let mut shared: HashSet<Arc<Labels>> = HashSet::new();
        let mut shared_keys: HashSet<Arc<str>> = HashSet::new();
        for (i, m) in metrics.iter().enumerate() {
            let metric_name: Arc<str> = Arc::from(m.name.as_str());
            let keys: Vec<(String, Labels)> = match (&m.target.key, &m.target.pattern) {
                (Some(key), _) => {
                    let mut labels = m.labels.clone();
                    labels.insert(KEY_LABEL_FULL.to_string(), key.clone());
                    vec![(key.clone(), labels)]
                }
                (None, Some(pattern)) => discovery
                    .keys(pattern, m.target.key_type)
                    .iter()
                    .map(|key| {
                        let mut labels = m.labels.clone();
                        labels.insert(KEY_LABEL_FULL.to_string(), key.clone());
                        labels.insert(
                            m.target.key_label().to_string(),
                            wildcard_part(pattern, key),
                        );
                        (key.clone(), labels)
                    })
                    .collect(),
                (None, None) => Vec::new(),
            };
            for (key, labels) in keys {
                let read = SeriesRead {
                    target: &m.target,
                    measure: m.measure,
                    key: &key,
                    db,
                };
                let planned = read.plan(&mut first);
                let key = match shared_keys.get(key.as_str()) {
                    Some(k) => k.clone(),
                    None => {
                        let k: Arc<str> = Arc::from(key.as_str());
                        shared_keys.insert(k.clone());
                        k
                    }
                };
                let labels = match shared.get(&labels) {
                    Some(l) => l.clone(),
                    None => {
                        let l = Arc::new(labels);
                        shared.insert(l.clone());
                        l
                    }
                };
                series.push(PlannedSeries {
                    metric: i,
                    metric_name: metric_name.clone(),
                    key,
                    labels,
                    planned,
                });
            }
        }
        first.seal();
        // Kept until the keys change: no growth slack (a third of the vector's size).
        series.shrink_to_fit();
        Plan {
            series,
            first,
            time_idx,
            role_idx,
        }
    }
}
