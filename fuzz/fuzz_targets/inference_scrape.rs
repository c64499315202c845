//! Model-server scrapes: any body, read as Prometheus text (a pod's `/metrics`) or as a
//! Prometheus query answer, goes through every preset's measures, a counter rate and the
//! per-workload combination twice (so rates are computed), without a panic and without a
//! non-finite value coming out as a number.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::config::{Config, SourceConfig};
use queue_metrics_adapter::sources::exposition::parse::parse;
use queue_metrics_adapter::sources::exposition::prometheus_api::vector;
use queue_metrics_adapter::sources::inference::plans::{Plans, PodScrape};
use queue_metrics_adapter::sources::inference::prometheus::split;
use queue_metrics_adapter::sources::kubernetes::owners::Workload;
use queue_metrics_adapter::sources::kubernetes::workloads::PodRef;

/// One config per preset, each with all of its measures, a rate and a value.
fn configs() -> &'static Vec<Config> {
    static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        [
            ("vllm", "waiting_requests running_requests kv_cache_usage_ratio"),
            ("tgi", "waiting_requests running_requests"),
            ("triton", "waiting_requests queue_time_seconds"),
            ("sglang", "waiting_requests running_requests kv_cache_usage_ratio"),
        ]
        .iter()
        .map(|(preset, measures)| {
            let mut yaml = format!(
                "kubernetes: {{kubeconfig: /dev/null}}\nsources:\n  s:\n    inference:\n      preset: {preset}\n      pods: {{selector: \"a=b\", port: 1}}\n      extra_labels: {{model: model_name}}\nmetrics:\n  - {{name: r, source: s, measure: rate, inference: {{family: \"x_total\", pod: max}}}}\n  - {{name: v, source: s, measure: value, inference: {{family: \"g\", pod: mean, workload: mean}}}}\n"
            );
            for (i, m) in measures.split(' ').enumerate() {
                yaml.push_str(&format!("  - {{name: m{i}, source: s, measure: {m}}}\n"));
            }
            Config::from_yaml(&yaml, Path::new("fuzz.yaml")).expect("fuzz config")
        })
        .collect()
    })
}

fn check(scrapes: &[PodScrape<'_>], plans: &mut Plans) {
    let workload = |s: &PodScrape<'_>| {
        Some(Workload {
            namespace: s.pod.namespace.clone(),
            kind: "Deployment".into(),
            name: s.pod.name.chars().take(3).collect(),
        })
    };
    for sample in plans.read(scrapes, workload) {
        if let Ok(v) = sample.value {
            assert!(v.is_finite(), "{} came out as {v}", sample.metric);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(rest);
    for config in configs() {
        let Some(SourceConfig::Inference(conn)) = config.sources.get("s") else {
            unreachable!()
        };
        let metrics: Vec<_> = config
            .metrics
            .iter()
            .map(|m| (m, m.targets.inference.as_ref()))
            .collect();
        let mut plans = Plans::new(conn, &metrics).expect("plans");
        for at in [1.0, 2.0] {
            if mode % 2 == 0 {
                let parsed = parse(&body);
                let scrape = PodScrape {
                    pod: PodRef {
                        namespace: "ml".into(),
                        name: "pod-a".into(),
                    },
                    meta: None,
                    endpoint: String::new(),
                    outcome: Ok(parsed.samples),
                    at,
                    observed_at: None,
                };
                check(&[scrape], &mut plans);
            } else if let Ok(result) = vector(&body) {
                let (pods, _) = split(&result);
                let scrapes: Vec<PodScrape<'_>> = pods
                    .into_iter()
                    .map(|(pod, answer)| PodScrape {
                        pod,
                        meta: None,
                        endpoint: String::new(),
                        at: answer.oldest.unwrap_or(at),
                        observed_at: None,
                        outcome: Ok(answer.samples),
                    })
                    .collect();
                check(&scrapes, &mut plans);
            }
        }
    }
});
