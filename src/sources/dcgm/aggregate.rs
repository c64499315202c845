//! GPU readings aggregated per pod; pods then combine per workload in
//! [`crate::sources::kubernetes::workloads`]. No I/O here.
//!
//! A multi-GPU pod is one pod: its GPUs are averaged first, so the HPA's per-pod view is not skewed
//! by how many GPUs a pod has. GPUs attributed to no pod are never averaged in. A group whose GPUs
//! all lack the signal is an error, never 0.

use std::collections::BTreeMap;

use super::gpus::GpuReading;
use crate::sources::kubernetes::workloads::{PodKey, PodValue, WorkloadAggregate};

/// Per-pod values of `signal` (e.g. [`GpuReading::utilization`]), combined over the pod's GPUs
/// the way `aggregate` combines pods: mean (and `gpus`) average them, max takes the busiest, sum
/// adds them (unknown if any GPU lacks the signal). Unattributed GPUs are skipped.
pub fn per_pod(
    readings: &[GpuReading],
    signal: impl Fn(&GpuReading) -> Option<f64>,
    aggregate: WorkloadAggregate,
) -> BTreeMap<PodKey, PodValue> {
    // (sum, known GPUs, all GPUs, max)
    let mut acc: BTreeMap<PodKey, (f64, usize, usize, f64)> = BTreeMap::new();
    for r in readings {
        let Some(pod) = &r.pod else { continue };
        let key = PodKey {
            pod: pod.clone(),
            extra: r.extra.clone(),
        };
        let e = acc.entry(key).or_insert((0.0, 0, 0, f64::NEG_INFINITY));
        e.2 += 1;
        if let Some(v) = signal(r) {
            e.0 += v;
            e.1 += 1;
            e.3 = e.3.max(v);
        }
    }
    acc.into_iter()
        .map(|(pod, (sum, known, gpus, max))| {
            let value = match aggregate {
                _ if known == 0 => None,
                WorkloadAggregate::Mean | WorkloadAggregate::Gpus => Some(sum / known as f64),
                WorkloadAggregate::Max => Some(max),
                WorkloadAggregate::Sum => (known == gpus).then_some(sum),
            };
            (pod, PodValue { value, gpus })
        })
        .collect()
}

/// Test data of scale: a generated exporter body (kept with the benchmarks, which use it too).
#[cfg(test)]
#[path = "../../../benches/support/dcgm_payload.rs"]
mod dcgm_payload;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sources::dcgm::gpus::{Field, GpuKey, PodRef};
    use crate::sources::kubernetes::workloads::per_group;

    fn gpu(uuid: &str, pod: Option<(&str, &str)>, util: Option<f64>) -> GpuReading {
        GpuReading {
            key: Some(GpuKey {
                uuid: uuid.into(),
                instance: String::new(),
            }),
            node: None,
            pod: pod.map(|(ns, name)| PodRef {
                namespace: ns.into(),
                name: name.into(),
            }),
            values: util
                .map(|u| HashMap::from([(Field::EngineActive, u)]))
                .unwrap_or_default(),
            extra: Vec::new(),
        }
    }

    #[test]
    fn multi_gpu_pods_count_once_and_unattributed_gpus_never() {
        let readings = vec![
            gpu("a", Some(("ml", "infer-1")), Some(90.0)),
            gpu("b", Some(("ml", "infer-1")), Some(70.0)),
            gpu("c", Some(("ml", "infer-2")), Some(20.0)),
            gpu("d", None, Some(0.0)),
        ];
        let pods = per_pod(&readings, GpuReading::utilization, WorkloadAggregate::Mean);
        assert_eq!(pods.len(), 2);
        let workload = |_: &PodKey| Some("infer");
        assert_eq!(
            per_group(&pods, workload, WorkloadAggregate::Mean)["infer"],
            Ok(50.0),
            "(80 + 20) / 2, not (90+70+20)/3"
        );
        assert_eq!(
            per_group(&pods, workload, WorkloadAggregate::Gpus)["infer"],
            Ok(3.0)
        );
        let with = |aggregate| {
            let pods = per_pod(&readings, GpuReading::utilization, aggregate);
            per_group(&pods, workload, aggregate)["infer"].clone()
        };
        assert_eq!(with(WorkloadAggregate::Max), Ok(90.0), "the busiest GPU");
        assert_eq!(with(WorkloadAggregate::Sum), Ok(180.0), "every GPU counted");
    }

    #[test]
    fn a_generated_4000_gpu_payload_parses_and_aggregates() {
        let body = super::dcgm_payload::payload(4000);
        let parsed = crate::sources::exposition::parse::parse(&body);
        assert_eq!(parsed.malformed, 0);
        let readings = crate::sources::dcgm::gpus::readings(
            &parsed.samples,
            &crate::sources::dcgm::gpus::builtin_aliases(),
            &[],
        );
        assert_eq!(readings.len(), 4000);
        let pods = per_pod(&readings, GpuReading::utilization, WorkloadAggregate::Mean);
        assert_eq!(
            pods.len(),
            2000,
            "GPUs 4k and 4k+1 share a pod, 4k+2 has one alone, 4k+3 is idle"
        );
        let groups = per_group(
            &pods,
            |p| {
                p.pod
                    .name
                    .split('-')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("-")
                    .into()
            },
            WorkloadAggregate::Gpus,
        );
        assert_eq!(groups.len(), 10);
        assert_eq!(
            groups
                .values()
                .map(|g| g.as_ref().map_or(0.0, |v| *v))
                .sum::<f64>(),
            3000.0,
            "idle GPUs are no one's"
        );
    }

    #[test]
    fn a_sum_with_an_unknown_pod_is_unknown_but_mean_and_max_use_the_known_pods() {
        let mut pods = per_pod(
            &[gpu("a", Some(("ml", "w-1")), Some(40.0))],
            GpuReading::utilization,
            WorkloadAggregate::Mean,
        );
        // A pod whose exporter did not answer this poll.
        pods.insert(
            PodKey {
                pod: PodRef {
                    namespace: "ml".into(),
                    name: "w-2".into(),
                },
                extra: Vec::new(),
            },
            PodValue {
                value: None,
                gpus: 2,
            },
        );
        let all = |_: &PodKey| Some("w");
        assert!(per_group(&pods, all, WorkloadAggregate::Sum)["w"].is_err());
        assert_eq!(
            per_group(&pods, all, WorkloadAggregate::Mean)["w"],
            Ok(40.0)
        );
        assert_eq!(per_group(&pods, all, WorkloadAggregate::Max)["w"], Ok(40.0));
        assert_eq!(per_group(&pods, all, WorkloadAggregate::Gpus)["w"], Ok(3.0));
    }

    #[test]
    fn a_workload_with_no_known_gpu_is_an_error_and_unresolved_pods_are_left_out() {
        let readings = vec![
            gpu("a", Some(("ml", "w-1")), None),
            gpu("b", Some(("ml", "new-pod")), Some(50.0)),
        ];
        let pods = per_pod(&readings, GpuReading::utilization, WorkloadAggregate::Mean);
        let groups = per_group(
            &pods,
            |p| (p.pod.name != "new-pod").then_some("w"),
            WorkloadAggregate::Mean,
        );
        assert_eq!(
            groups.len(),
            1,
            "the unresolved pod is not guessed into a workload"
        );
        assert!(groups["w"].is_err());
    }
}
