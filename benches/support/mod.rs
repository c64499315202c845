//! Set-up shared by the benches that serve from memory (serve, keda, tls): a store polled once
//! with given samples, and the HTTP state around it. Included with `mod support;`; a folder, so
//! cargo does not take it for a bench of its own.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use queue_metrics_adapter::api::health_state::Health;
use queue_metrics_adapter::api::{AppState, Shared};
use queue_metrics_adapter::model::{Labels, Sample};
use queue_metrics_adapter::poller::Heartbeats;
use queue_metrics_adapter::security::Guard;
use queue_metrics_adapter::store::{MetricInfo, Store};
use queue_metrics_adapter::telemetry::Telemetry;

/// A sample of `metric` with `labels` and `value`.
pub fn sample(metric: &str, labels: &[(&str, &str)], value: f64) -> Sample {
    Sample::new(
        metric.into(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Labels>()
            .into(),
        Ok(value),
    )
}

/// A store serving `metrics` (all from source `jobs`, values fresh for an hour), polled once
/// with `samples`.
pub fn polled_store(metrics: &[&str], samples: Vec<Sample>) -> Arc<Store> {
    let infos = metrics
        .iter()
        .map(|name| MetricInfo {
            namespace_label: None,
            empty_means_zero: false,
            name: name.to_string(),
            source: "jobs".into(),
            description: None,
            namespaces: None,
        })
        .collect();
    let store = Store::new(infos, Duration::from_secs(3600));
    store.record_poll("jobs", SystemTime::now(), Ok(samples));
    Arc::new(store)
}

/// The HTTP state around `store`, listening, with `guard` in front of the metric routes.
pub fn app_state(store: Arc<Store>, guard: Option<Arc<Guard>>) -> AppState {
    let health = Arc::new(Health::default());
    health.set_listening();
    AppState::new(Shared {
        guard,
        provider: store.clone(),
        store,
        telemetry: Telemetry::new(),
        health,
        heartbeats: Arc::new(Heartbeats::default()),
        selectors: Default::default(),
    })
}
