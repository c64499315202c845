//! The Redis reply readers, through the planner: a series of each key type and measure is
//! planned, and whatever RESP2/RESP3 replies the server sends back (parsed by redis-rs from the
//! input) become a value or a series error, never a panic, never a non-finite value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::config::Measure;
use queue_metrics_adapter::sources::redis::config::RedisTarget;
use queue_metrics_adapter::sources::redis::batch::Batch;
use queue_metrics_adapter::sources::redis::reads::SeriesRead;
use redis::Value;

/// Targets and measures to plan, one picked by the first byte.
const TARGETS: &[(&str, Measure)] = &[
    (r#"{"type":"list","key":"q"}"#, Measure::Length),
    (r#"{"type":"list","key":"q","kombu_priority_steps":[3,6]}"#, Measure::Length),
    (r#"{"type":"list","key":"q","timestamp":{"json_pointer":"/t","unit":"ms"}}"#, Measure::OldestAgeSeconds),
    (r#"{"type":"list","key":"q","oldest_at":"head","timestamp":{"json_pointer":"/t","unit":"rfc3339"}}"#, Measure::OldestAgeSeconds),
    (r#"{"type":"list","key":"q","timestamp":{"hash":"job:{id}","field":"at","unit":"s"}}"#, Measure::OldestAgeSeconds),
    (r#"{"type":"stream","key":"s"}"#, Measure::Length),
    (r#"{"type":"stream","key":"s","group":"g"}"#, Measure::Lag),
    (r#"{"type":"stream","key":"s","group":"g"}"#, Measure::Pending),
    (r#"{"type":"stream","key":"s","group":"g"}"#, Measure::OldestPendingAgeSeconds),
    (r#"{"type":"stream","key":"s","group":"g"}"#, Measure::OldestUnprocessedAgeSeconds),
    (r#"{"type":"zset","key":"z"}"#, Measure::Length),
    (r#"{"type":"zset","key":"z","score_unit":"ms"}"#, Measure::Ready),
    (r#"{"type":"zset","key":"z","score_unit":"bullmq"}"#, Measure::OldestAgeSeconds),
    (r#"{"type":"list","key":"q","also":[{"type":"zset","key":"q:p"},{"type":"list","key":"q:x"}]}"#, Measure::Length),
    (r#"{"type":"list","key":"q","also":[{"type":"zset","key":"q:p"}],"timestamp":{"hash":"j:{id}","field":"timestamp","unit":"ms"}}"#, Measure::OldestAgeSeconds),
    (r#"{"type":"list","key":"q","timestamp":{"hash":"{key}.msgs","json_pointer":"/t","unit":"ms"}}"#, Measure::OldestAgeSeconds),
    (r#"{"type":"zset","key":"z","score_unit":"ms","in_progress":"p:{id}"}"#, Measure::Ready),
    (r#"{"type":"zset","key":"z","score_unit":"ms","in_progress":"p:{id}"}"#, Measure::OldestAgeSeconds),
    (r#"{"type":"zset","key":"z","score_unit":"ms","in_progress":"p:{id}"}"#, Measure::InFlight),
    (r#"{"type":"hash","key":"z"}"#, Measure::Length),
    (r#"{"type":"set","key":"z"}"#, Measure::Length),
    (r#"{"type":"stream","key":"s"}"#, Measure::ArrivalRate),
    (r#"{"type":"stream","key":"s","group":"g"}"#, Measure::CompletionRate),
    (r#"{"type":"stream","key":"s","group":"g"}"#, Measure::DrainSeconds),
    (r#"{"type":"string","key":"c","also":[{"type":"string","key":"d"}]}"#, Measure::CompletionRate),
    (r#"{"type":"hash","key":"h","field":"count"}"#, Measure::ArrivalRate),
];

/// The replies of one round trip: the items of a RESP array, padded with nil to `n`.
fn replies(value: Option<&Value>, n: usize) -> Vec<Value> {
    let mut items = match value {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => vec![other.clone()],
        None => Vec::new(),
    };
    items.resize(n, Value::Nil);
    items
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (json, measure) = TARGETS[usize::from(pick) % TARGETS.len()];
    let target: RedisTarget = serde_json::from_str(json).expect("a valid target");
    let key = if json.contains("\"q\"") { "q" } else if json.contains("\"s\"") { "s" } else { "z" };
    let read = SeriesRead {
        target: &target,
        measure,
        key,
        db: 0,
    };
    // The input is RESP: an array of the two rounds' reply arrays.
    let rounds = redis::parse_redis_value(rest).ok();
    let rounds = match &rounds {
        Some(Value::Array(r)) => r.clone(),
        _ => Vec::new(),
    };
    let now_ms = 1_795_311_069_997.0;
    let mut first = Batch::new();
    let planned = read.plan(&mut first);
    let one = replies(rounds.first(), first.len());
    let _ = read.exists(&planned, &one);
    let mut second = Batch::new();
    let pending = read.after_round_one(&planned, &one, now_ms, &mut second);
    let two = replies(rounds.get(1), second.len());
    if let Ok(v) = read.finish(pending, &two, now_ms) {
        assert!(!v.is_nan(), "NaN from {json} {measure}");
    }
});
