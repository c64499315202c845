//! Parsing and aggregating a 4,000-GPU dcgm-exporter payload (DESIGN target: < 50 ms), against a
//! baseline in the same run: splitting the same body into lines and parsing each line's trailing
//! number, the least any reader of this format must do.
//!
//! `make bench` (or `cargo bench --bench dcgm`); results in BENCHMARKS.md.

use criterion::{Criterion, criterion_group, criterion_main};
use queue_metrics_adapter::sources::dcgm::aggregate::per_pod;
use queue_metrics_adapter::sources::dcgm::gpus::{GpuReading, builtin_aliases, readings};
use queue_metrics_adapter::sources::exposition::parse;
use queue_metrics_adapter::sources::kubernetes::workloads::{WorkloadAggregate, per_group};

#[path = "support/dcgm_payload.rs"]
mod dcgm_payload;

fn bench(c: &mut Criterion) {
    let body = dcgm_payload::payload(4000);
    let aliases = builtin_aliases();
    let mut group = c.benchmark_group("dcgm_4000_gpus");
    group.sample_size(30);
    group.bench_function("split_lines_baseline", |b| {
        b.iter(|| {
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .sum::<f64>()
        });
    });
    group.bench_function("parse_and_aggregate", |b| {
        b.iter(|| {
            let parsed = parse::parse(&body);
            let r = readings(&parsed.samples, &aliases, &[]);
            let pods = per_pod(&r, GpuReading::utilization, WorkloadAggregate::Mean);
            per_group(
                &pods,
                |p| p.pod.name.rsplitn(3, '-').nth(2).map(str::to_string),
                WorkloadAggregate::Mean,
            )
        });
    });
    group.finish();
    println!(
        "payload: {} bytes, {} lines",
        body.len(),
        body.lines().count()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
