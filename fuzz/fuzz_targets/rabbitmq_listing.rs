//! The RabbitMQ management listing reader: any JSON body is a page of queues or an error, and
//! every measure of every queue on it is a finite value or a series error, with rates collected
//! or not and timestamps in either unit, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::config::Measure;
use queue_metrics_adapter::sources::rabbitmq::config::{HeadTimestampUnit, MANAGEMENT_MEASURES};
use queue_metrics_adapter::sources::rabbitmq::management::{Overview, Page, Reading, value};

fuzz_target!(|data: &[u8]| {
    let Ok(page) = serde_json::from_slice::<Page>(data) else {
        // The same bytes as an overview, for its reader.
        if let Ok(o) = serde_json::from_slice::<Overview>(data) {
            let _ = o.rates();
        }
        return;
    };
    let collected = Ok(());
    let off = Err("no rates".to_string());
    for rates in [&collected, &off] {
        for unit in [HeadTimestampUnit::S, HeadTimestampUnit::Ms] {
            let at = Reading {
                now_ms: 1_795_311_069_997.0,
                max_drain_seconds: 86_400.0,
                rates,
                timestamp_unit: unit,
            };
            for q in &page.items {
                for &m in MANAGEMENT_MEASURES {
                    if let Ok(v) = value(q, m, &at) {
                        assert!(v.is_finite() || m == Measure::PublishRate, "{m}: {v}");
                    }
                }
            }
        }
    }
});
