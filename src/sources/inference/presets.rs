//! What each model server calls its queue, its batch and its KV cache, so a user writes
//! `preset: vllm` and a measure instead of family names. Every name, type and unit below was
//! read in the project's own source or docs (cited per preset); the fixtures in
//! `tests/fixtures/` are real `/metrics` output of these servers (one rendered, said so there).
//!
//! Conventions shared by the servers: gauges are per engine/model series, so one pod can have
//! several (vLLM `engine`, Triton `model`/`version`, SGLang `tp_rank`/`dp_rank`): queues and
//! batches add up over a pod's series, usage fractions take the fullest. KV-cache usage is a
//! fraction 0–1 on every server that has it (vLLM's `_perc` suffix notwithstanding).

use serde::Deserialize;

use crate::sources::measure::Measure;

/// A model server whose metric names the adapter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// vLLM (OpenAI-compatible server, `/metrics` on the API port).
    Vllm,
    /// Hugging Face text-generation-inference (`/metrics` on the API port).
    Tgi,
    /// NVIDIA Triton Inference Server (`/metrics` on port 8002).
    Triton,
    /// SGLang (`--enable-metrics`; `/metrics` on the API port).
    Sglang,
}

/// How a pod's series of one family combine into the pod's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Add them: queues and batches (one per engine or model).
    Sum,
    /// Their mean.
    Mean,
    /// The largest: a usage fraction (the fullest engine is the one that queues next).
    Max,
}

/// What a measure reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A gauge. The first family that has series in a pod's scrape is read and the others
    /// ignored, so a family renamed across versions (vLLM's KV cache) is read under either
    /// name and never counted twice while a version exports both.
    Gauge(Vec<String>),
    /// The per-second rate of a counter family over the rate window.
    Rate(String),
    /// `scale` × (increase of `numerator`) / (increase of `denominator`) over the rate window,
    /// summed over a pod's series: a mean per event (Triton's queue time per request).
    RatioOfIncreases {
        /// The cumulative total (µs of queueing).
        numerator: String,
        /// The events it is spread over (requests).
        denominator: String,
        /// Brings the ratio to the served unit (µs to s).
        scale: f64,
    },
}

/// A preset measure: what it reads and how its series and pods combine by default.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The families.
    pub reading: Reading,
    /// A pod's series (engines, models).
    pub pod: Combine,
    /// The workload's pods.
    pub workload: Combine,
}

fn gauge(families: &[&str], pod: Combine, workload: Combine) -> Recipe {
    Recipe {
        reading: Reading::Gauge(families.iter().map(|f| (*f).to_string()).collect()),
        pod,
        workload,
    }
}

impl Preset {
    /// The preset's config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Vllm => "vllm",
            Preset::Tgi => "tgi",
            Preset::Triton => "triton",
            Preset::Sglang => "sglang",
        }
    }

    /// The measures this server has.
    pub fn measures(self) -> &'static [Measure] {
        use Measure::{KvCacheUsageRatio, QueueTimeSeconds, RunningRequests, WaitingRequests};
        match self {
            Preset::Vllm | Preset::Sglang => &[WaitingRequests, RunningRequests, KvCacheUsageRatio],
            Preset::Tgi => &[WaitingRequests, RunningRequests],
            Preset::Triton => &[WaitingRequests, QueueTimeSeconds],
        }
    }

    /// What `measure` reads on this server; `None` if it has no such signal.
    pub fn recipe(self, measure: Measure) -> Option<Recipe> {
        use Combine::{Max, Mean, Sum};
        let recipe = match (self, measure) {
            // vLLM v1, `vllm/v1/metrics/loggers.py` (PrometheusStatLogger): gauges
            // `vllm:num_requests_waiting` / `vllm:num_requests_running` ("Number of requests
            // waiting to be processed." / "in model execution batches.") and
            // `vllm:kv_cache_usage_perc` ("KV-cache usage. 1 means 100 percent usage."), labels
            // `model_name`, `engine`. `kv_cache_usage_perc` was added beside the older
            // `vllm:gpu_cache_usage_perc` in vllm-project/vllm#18354 (v0.9.2; both carry the
            // same value through 0.10.x), the old name hidden in 0.11 (#24245) and removed
            // (#29330). Fixtures: vllm-0.4.3 (old name only), vllm-0.10.2 (both).
            (Preset::Vllm, Measure::WaitingRequests) => {
                gauge(&["vllm:num_requests_waiting"], Sum, Sum)
            }
            (Preset::Vllm, Measure::RunningRequests) => {
                gauge(&["vllm:num_requests_running"], Sum, Sum)
            }
            (Preset::Vllm, Measure::KvCacheUsageRatio) => gauge(
                &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
                Max,
                Mean,
            ),
            // TGI v3.3.7: `tgi_queue_size` (router/src/server.rs, gauge, unlabelled: requests
            // in the router's queue) and `tgi_batch_current_size` (backends/v3/src/backend.rs,
            // gauge: requests in the running batch); docs/source/reference/metrics.md lists
            // both. TGI has no KV-usage gauge. Fixture: tgi-3.3.x.
            (Preset::Tgi, Measure::WaitingRequests) => gauge(&["tgi_queue_size"], Sum, Sum),
            (Preset::Tgi, Measure::RunningRequests) => gauge(&["tgi_batch_current_size"], Sum, Sum),
            // Triton core (src/metrics.cc): `nv_inference_pending_request_count` gauge
            // {model, version} (since 23.09: "Instantaneous number of pending requests awaiting
            // execution per-model."); `nv_inference_queue_duration_us` counter, cumulative µs
            // requests spent queued, and `nv_inference_request_success` counter; mean queue
            // time = Δqueue_duration / Δrequest_success. Fixture: triton-2.38.0.
            (Preset::Triton, Measure::WaitingRequests) => {
                gauge(&["nv_inference_pending_request_count"], Sum, Sum)
            }
            (Preset::Triton, Measure::QueueTimeSeconds) => Recipe {
                reading: Reading::RatioOfIncreases {
                    numerator: "nv_inference_queue_duration_us".into(),
                    denominator: "nv_inference_request_success".into(),
                    scale: 1e-6,
                },
                pod: Sum,
                workload: Mean,
            },
            // SGLang `python/sglang/srt/metrics/collector.py` (SchedulerMetricsCollector):
            // gauges `sglang:num_queue_reqs`, `sglang:num_running_reqs`, `sglang:token_usage`
            // (KV token pool in use, 0–1), labels `model_name` and per-rank `tp_rank`,
            // `pp_rank`, `dp_rank` in newer versions. Needs `--enable-metrics`. Fixture:
            // sglang-0.3.6-0.4.1 (docs/references/production_metrics.md).
            (Preset::Sglang, Measure::WaitingRequests) => {
                gauge(&["sglang:num_queue_reqs"], Sum, Sum)
            }
            (Preset::Sglang, Measure::RunningRequests) => {
                gauge(&["sglang:num_running_reqs"], Sum, Sum)
            }
            (Preset::Sglang, Measure::KvCacheUsageRatio) => {
                gauge(&["sglang:token_usage"], Max, Mean)
            }
            _ => return None,
        };
        Some(recipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_measure_has_a_recipe_and_no_other() {
        let all = [
            Measure::WaitingRequests,
            Measure::RunningRequests,
            Measure::KvCacheUsageRatio,
            Measure::QueueTimeSeconds,
            Measure::Value,
            Measure::Rate,
            Measure::Length,
        ];
        for preset in [Preset::Vllm, Preset::Tgi, Preset::Triton, Preset::Sglang] {
            for m in all {
                assert_eq!(
                    preset.recipe(m).is_some(),
                    preset.measures().contains(&m),
                    "{preset:?} {m:?}"
                );
            }
        }
    }
}
