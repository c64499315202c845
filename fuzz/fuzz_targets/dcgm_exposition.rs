//! dcgm-exporter exposition reading and aggregation: any body is read (malformed lines skipped
//! and counted), its GPUs aggregated per pod and per workload in every mode, without a panic
//! and without a non-finite value coming out as a number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::sources::dcgm::aggregate::per_pod;
use queue_metrics_adapter::sources::kubernetes::workloads::{WorkloadAggregate, per_group};
use queue_metrics_adapter::sources::dcgm::gpus::{GpuReading, builtin_aliases, readings};
use queue_metrics_adapter::sources::exposition::parse::parse;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let parsed = parse(&body);
    let gpus = readings(&parsed.samples, &builtin_aliases(), &["modelName".to_string()]);
    for aggregate in [
        WorkloadAggregate::Mean,
        WorkloadAggregate::Max,
        WorkloadAggregate::Sum,
        WorkloadAggregate::Gpus,
    ] {
        for signal in [
            GpuReading::utilization as fn(&GpuReading) -> Option<f64>,
            GpuReading::memory_used_ratio,
        ] {
            let pods = per_pod(&gpus, signal, aggregate);
            let groups = per_group(&pods, |p| Some(p.pod.namespace.clone()), aggregate);
            for value in groups.values().flatten() {
                assert!(!value.is_nan(), "a NaN came out of {aggregate:?}");
            }
        }
    }
});
