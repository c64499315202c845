//! The model servers' metrics from a Prometheus that already scrapes them (a PodMonitor or
//! ServiceMonitor): one instant query per poll for every family the metrics read and for `up`
//! ([`crate::sources::exposition::query::series_and_times`]), split per pod by the `namespace` and `pod` target labels the Prometheus Operator sets.
//!
//! A pod Prometheus reports down (`up == 0`) is an unknown member of its workload, as a failed
//! direct scrape is; each pod's readings carry the oldest sample time among them
//! (`timestamp(...)` in the same query), so a pod Prometheus last saw minutes ago ages out
//! under `max_staleness`, and counter rates use the samples' own times.

use std::collections::BTreeMap;

use crate::sources::exposition::parse::PromSample;
use crate::sources::exposition::query::{SAMPLE_OF, VectorSample};
use crate::sources::kubernetes::workloads::PodRef;

/// One pod in a query answer.
#[derive(Debug, Default)]
pub struct PodAnswer<'a> {
    /// Its `up`, if the answer has one.
    pub up: Option<bool>,
    /// Its samples of the families asked for.
    pub samples: Vec<PromSample<'a>>,
    /// Samples whose value did not parse.
    pub unreadable: usize,
    /// The oldest sample time (unix seconds) among its samples.
    pub oldest: Option<f64>,
}

/// Splits a vector answer per pod; series without `namespace` and `pod` labels name no pod and
/// are counted in the second value (a scrape config that drops the target labels).
pub fn split(result: &[VectorSample]) -> (BTreeMap<PodRef, PodAnswer<'_>>, usize) {
    let mut pods: BTreeMap<PodRef, PodAnswer<'_>> = BTreeMap::new();
    let mut unattributed = 0;
    for s in result {
        let (Some(namespace), Some(pod)) = (s.metric.get("namespace"), s.metric.get("pod")) else {
            unattributed += 1;
            continue;
        };
        let answer = pods
            .entry(PodRef {
                namespace: namespace.clone(),
                name: pod.clone(),
            })
            .or_default();
        let Ok(value) = s.value.1.parse::<f64>() else {
            answer.unreadable += 1;
            continue;
        };
        if s.metric.contains_key(SAMPLE_OF) {
            if value.is_finite() {
                answer.oldest = Some(answer.oldest.map_or(value, |o: f64| o.min(value)));
            }
            continue;
        }
        let name = s.metric.get("__name__").map_or("", String::as_str);
        if name == "up" {
            answer.up = Some(value >= 1.0);
            continue;
        }
        answer.samples.push(PromSample {
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
    (pods, unattributed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::exposition::query::vector;

    #[test]
    fn answers_split_per_pod_with_up_and_sample_times() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
          {"metric":{"__name__":"up","namespace":"ml","pod":"vllm-0","job":"vllm"},"value":[10,"1"]},
          {"metric":{"__name__":"vllm:num_requests_waiting","namespace":"ml","pod":"vllm-0","engine":"0"},"value":[10,"4"]},
          {"metric":{"qma_sample_of":"vllm:num_requests_waiting","namespace":"ml","pod":"vllm-0","engine":"0"},"value":[10,"8.5"]},
          {"metric":{"__name__":"up","namespace":"ml","pod":"vllm-1"},"value":[10,"0"]},
          {"metric":{"__name__":"vllm:num_requests_waiting","namespace":"ml","pod":"vllm-1"},"value":[10,"x"]},
          {"metric":{"__name__":"vllm:num_requests_waiting","instance":"10.0.0.9:8000"},"value":[10,"3"]}
        ]}}"#;
        let result = vector(body).expect("vector");
        let (pods, unattributed) = split(&result);
        assert_eq!(unattributed, 1);
        let p0 = &pods[&PodRef {
            namespace: "ml".into(),
            name: "vllm-0".into(),
        }];
        assert_eq!(
            (p0.up, p0.samples.len(), p0.oldest),
            (Some(true), 1, Some(8.5))
        );
        assert_eq!(p0.samples[0].label("engine"), Some("0"));
        let p1 = &pods[&PodRef {
            namespace: "ml".into(),
            name: "vllm-1".into(),
        }];
        assert_eq!((p1.up, p1.unreadable), (Some(false), 1));
    }
}
