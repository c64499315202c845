//! What a metric can compute, for every kind: one enum, so that a measure's config name is
//! written once and a `match` over measures anywhere is checked for exhaustiveness. Which kind
//! offers which measure is each kind's own check (its `validate_metric`).

use std::fmt;

use serde::Deserialize;

/// What a metric computes from what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Number of entries (list `LLEN`, stream `XLEN`, sorted set `ZCARD`).
    Length,
    /// Seconds since the oldest entry was enqueued (list, sorted set).
    OldestAgeSeconds,
    /// Stream entries not yet delivered to the consumer group (NATS: to the consumer).
    Lag,
    /// Stream entries delivered to the group and not yet acknowledged.
    Pending,
    /// Age of the oldest delivered-but-unacknowledged stream entry.
    OldestPendingAgeSeconds,
    /// Age of the oldest stream entry the group has not finished (pending, else undelivered).
    OldestUnprocessedAgeSeconds,
    /// Sorted-set entries whose score (run-at time) has passed; RabbitMQ messages ready for delivery.
    Ready,
    /// RabbitMQ: delivered, not yet acknowledged.
    Unacked,
    /// RabbitMQ: ready + unacknowledged.
    Total,
    /// RabbitMQ: consumers attached.
    Consumers,
    /// RabbitMQ: messages published per second.
    PublishRate,
    /// RabbitMQ: messages delivered per second.
    DeliverRate,
    /// RabbitMQ: messages acknowledged per second.
    AckRate,
    /// Waiting work / completion rate: seconds to drain at the current pace (RabbitMQ over
    /// the broker's own rates; streams and job libraries over the metric's `window`).
    DrainSeconds,
    /// Jobs entering the queue per second over the metric's `window`, from a counter the
    /// broker or library keeps.
    ArrivalRate,
    /// Jobs finished per second over the metric's `window`, from a counter the broker or
    /// library keeps.
    CompletionRate,
    /// The replicas that finish the waiting work within the metric's `target_wait` while
    /// keeping up with arrivals, from the throughput per replica of the workload named in
    /// `workers` over the metric's `window` ([`crate::sources::workers`]).
    WorkersNeeded,
    /// NATS: messages delivered to the consumer and not yet acknowledged (`num_ack_pending`).
    AckPending,
    /// NATS: messages of the consumer's pending ones that were delivered more than once
    /// (`num_redelivered`: the ones tracked now, not a running total).
    Redelivered,
    /// NATS: pull requests waiting at the consumer (`num_waiting`): idle workers asking for work.
    WaitingPulls,
    /// GPU utilization in percent 0–100 (engine activity, else GPU_UTIL).
    GpuUtilization,
    /// Frame buffer used / (used + free), 0–1.
    MemoryUsedRatio,
    /// Power draw in watts.
    PowerWatts,
    /// Model server: requests queued, not yet scheduled (vLLM `num_requests_waiting`, TGI
    /// `tgi_queue_size`, Triton pending, SGLang `num_queue_reqs`).
    WaitingRequests,
    /// Model server: requests in the running batch.
    RunningRequests,
    /// Model server: KV-cache (token pool) in use, a fraction 0–1.
    KvCacheUsageRatio,
    /// Model server: mean time a request waited in the queue over the rate window, in seconds
    /// (Triton's cumulative queue duration per request).
    QueueTimeSeconds,
    /// Job library: jobs a worker has taken and not finished (BullMQ `active`, RQ started).
    InFlight,
    /// Job library: delayed or scheduled jobs whose run-at time has come, not yet moved to
    /// the queue.
    Due,
    /// Job library: failed jobs the library keeps.
    Failed,
    /// Job library: delayed or scheduled jobs, due or not, not yet moved to the queue.
    Delayed,
    /// Model server: a named gauge family as the server reports it.
    Value,
    /// Model server: per-second rate of a named counter family over the rate window.
    Rate,
}

impl Measure {
    /// The measure's config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Length => "length",
            Measure::OldestAgeSeconds => "oldest_age_seconds",
            Measure::Lag => "lag",
            Measure::Pending => "pending",
            Measure::OldestPendingAgeSeconds => "oldest_pending_age_seconds",
            Measure::OldestUnprocessedAgeSeconds => "oldest_unprocessed_age_seconds",
            Measure::Ready => "ready",
            Measure::Unacked => "unacked",
            Measure::Total => "total",
            Measure::Consumers => "consumers",
            Measure::PublishRate => "publish_rate",
            Measure::DeliverRate => "deliver_rate",
            Measure::AckRate => "ack_rate",
            Measure::DrainSeconds => "drain_seconds",
            Measure::ArrivalRate => "arrival_rate",
            Measure::CompletionRate => "completion_rate",
            Measure::WorkersNeeded => "workers_needed",
            Measure::AckPending => "ack_pending",
            Measure::Redelivered => "redelivered",
            Measure::WaitingPulls => "waiting_pulls",
            Measure::GpuUtilization => "gpu_utilization",
            Measure::MemoryUsedRatio => "memory_used_ratio",
            Measure::PowerWatts => "power_watts",
            Measure::WaitingRequests => "waiting_requests",
            Measure::RunningRequests => "running_requests",
            Measure::KvCacheUsageRatio => "kv_cache_usage_ratio",
            Measure::QueueTimeSeconds => "queue_time_seconds",
            Measure::InFlight => "in_flight",
            Measure::Due => "due",
            Measure::Failed => "failed",
            Measure::Delayed => "delayed",
            Measure::Value => "value",
            Measure::Rate => "rate",
        }
    }
}

impl Measure {
    /// Whether the measure is computed over the metric's `window` from counters the adapter
    /// reads at each poll (`arrival_rate`, `completion_rate`).
    pub fn is_counter_rate(self) -> bool {
        matches!(self, Measure::ArrivalRate | Measure::CompletionRate)
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The measures of a job library's queue, on any broker (`{library: ..., queue: ...}`).
pub const JOB_LIBRARY_MEASURES: &[Measure] = &[
    Measure::Length,
    Measure::OldestAgeSeconds,
    Measure::InFlight,
    Measure::Due,
    Measure::Delayed,
    Measure::Failed,
    Measure::ArrivalRate,
    Measure::CompletionRate,
    Measure::DrainSeconds,
    Measure::WorkersNeeded,
];

/// The job-library measures that come from counters, which `discover` leaves out of the
/// config it writes: most libraries keep none, and those that do may not have counted yet.
pub const COUNTER_MEASURES: &[Measure] = &[
    Measure::ArrivalRate,
    Measure::CompletionRate,
    Measure::DrainSeconds,
    Measure::WorkersNeeded,
];

/// Whether `measure` is one a job library's queue is read for (`library` names it in the
/// error).
///
/// # Errors
/// The message naming the measures there are.
pub fn job_library_measure(measure: Measure, library: &str) -> Result<(), String> {
    if JOB_LIBRARY_MEASURES.contains(&measure) {
        return Ok(());
    }
    let fits: Vec<&str> = JOB_LIBRARY_MEASURES.iter().map(|m| m.as_str()).collect();
    Err(format!(
        "measure {measure} does not apply to a job library's queue; {library} has {fits:?}"
    ))
}
