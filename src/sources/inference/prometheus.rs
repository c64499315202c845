//! The model servers' metrics from a Prometheus that already scrapes them (a PodMonitor or
//! ServiceMonitor): one instant query per poll for every family the metrics read and for `up`
//! ([`crate::sources::exposition::prometheus_api::series_and_times`]), split per pod by the `namespace` and `pod` target labels the Prometheus Operator sets.
//!
//! A pod Prometheus reports down (`up == 0`) is an unknown member of its workload, as a failed
//! direct scrape is; each pod's readings carry the oldest sample time among them
//! (`timestamp(...)` in the same query), so a pod Prometheus last saw minutes ago ages out
//! under `max_staleness`, and counter rates use the samples' own times.

use std::collections::BTreeMap;

use crate::sources::exposition::prometheus_api::{self, TargetAnswer, VectorSample};
use crate::sources::kubernetes::workloads::PodRef;

/// Splits a vector answer per pod; series without `namespace` and `pod` labels name no pod and
/// are counted in the second value (a scrape config that drops the target labels).
pub fn split(result: &[VectorSample]) -> (BTreeMap<PodRef, TargetAnswer<'_>>, usize) {
    prometheus_api::split_by(result, |labels| {
        Some(PodRef {
            namespace: labels.get("namespace")?.clone(),
            name: labels.get("pod")?.clone(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::exposition::prometheus_api::vector;

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
        assert_eq!((p1.up, p1.unreadable.len()), (Some(false), 1));
    }
}
