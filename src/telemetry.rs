//! Logging set-up and the adapter's own Prometheus metrics (`qma_*`).
//!
//! Labels stay bounded: `source`, `kind`, `endpoint` (a route template, never a raw path),
//! `code`. The served metric values are rendered from the store at scrape time by
//! [`render_store`], so `/metrics` shows exactly what the API would serve, and never a value
//! for a series in error.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::store::Store;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global `tracing` subscriber. `RUST_LOG` overrides the default filter
/// (`info`). Safe to call more than once (later calls are ignored), which tests rely on.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file, a pipe or a container log gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The adapter's own metrics, registered in one registry.
#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    /// Duration of each poll, by source.
    pub poll_duration: HistogramVec,
    /// Failed polls, by source and error kind.
    pub poll_errors: IntCounterVec,
    /// Requests served, by endpoint (route template) and status code.
    requests: IntCounterVec,
    /// Request latency, by endpoint.
    request_duration: HistogramVec,
    /// The request series already made, looked up without a lock or a reference count
    /// (see [`Telemetry::observe_request`]).
    request_series: Arc<ArcSwap<HashMap<String, Arc<EndpointSeries>>>>,
    /// KEDA gRPC calls, by method and status code.
    pub grpc_requests: IntCounterVec,
    /// Config file reloads, by result (`applied`, `invalid`, `unchanged`).
    pub config_reloads: IntCounterVec,
    /// Each running source's poll timeout, so alerts compare poll durations with it.
    pub poll_timeout: prometheus::GaugeVec,
    /// Open KEDA `StreamIsActive` streams.
    pub grpc_streams: prometheus::IntGauge,
    /// Polls made because the backend reported a change (on top of the interval), by source.
    pub wake_polls: IntCounterVec,
    /// Whether a source that can be told of changes is watching all its keys now (1) or is
    /// polling alone (0), by source.
    pub push_watching: prometheus::IntGaugeVec,
    /// Whether `/metrics` shows every series' value with its labels (`qma_metric_value`). Off
    /// by default: `/metrics` needs no identity, so values there would reach any pod past the
    /// API's authorization and namespace rules.
    serve_values: bool,
}

impl Telemetry {
    /// Creates and registers every family.
    ///
    /// # Panics
    /// Never in practice: the names below are valid and registered once per registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let poll_duration = HistogramVec::new(
            HistogramOpts::new(
                "qma_poll_duration_seconds",
                "Duration of one poll of a source, successful or not.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["source"],
        )
        .expect("valid histogram");
        let poll_errors = IntCounterVec::new(
            Opts::new(
                "qma_poll_errors_total",
                "Polls that failed as a whole, by source and error kind.",
            ),
            &["source", "kind"],
        )
        .expect("valid counter");
        let requests = IntCounterVec::new(
            Opts::new(
                "qma_http_requests_total",
                "HTTP requests served, by endpoint and status code.",
            ),
            &["endpoint", "code"],
        )
        .expect("valid counter");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "qma_http_request_duration_seconds",
                "HTTP request latency, by endpoint.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
            ]),
            &["endpoint"],
        )
        .expect("valid histogram");
        let grpc_requests = IntCounterVec::new(
            Opts::new(
                "qma_grpc_requests_total",
                "KEDA external scaler calls, by method and gRPC status code.",
            ),
            &["method", "code"],
        )
        .expect("valid counter");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "qma_config_reloads_total",
                "Changes of the config file seen, by result: applied, unchanged (same config), or invalid (the previous config keeps serving).",
            ),
            &["result"],
        )
        .expect("valid counter");
        let poll_timeout = prometheus::GaugeVec::new(
            Opts::new(
                "qma_poll_timeout_seconds",
                "The poll timeout of each running source: a poll that takes longer fails.",
            ),
            &["source"],
        )
        .expect("valid gauge");
        let grpc_streams = prometheus::IntGauge::new(
            "qma_grpc_streams_open",
            "Open KEDA StreamIsActive streams (push activation).",
        )
        .expect("valid gauge");
        let wake_polls = IntCounterVec::new(
            Opts::new(
                "qma_wake_polls_total",
                "Polls made at once because the backend reported a change (Redis CLIENT TRACKING), on top of the poll interval.",
            ),
            &["source"],
        )
        .expect("valid counter");
        let push_watching = prometheus::IntGaugeVec::new(
            Opts::new(
                "qma_push_watching",
                "1 while every key of the source is watched for changes (wake in milliseconds), 0 while it is polled alone.",
            ),
            &["source"],
        )
        .expect("valid gauge");
        for c in [
            Box::new(poll_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(wake_polls.clone()),
            Box::new(push_watching.clone()),
            Box::new(poll_timeout.clone()),
            Box::new(grpc_streams.clone()),
            Box::new(poll_errors.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(grpc_requests.clone()),
            Box::new(config_reloads.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        Telemetry {
            registry,
            poll_duration,
            poll_errors,
            requests,
            request_duration,
            request_series: Arc::default(),
            grpc_requests,
            config_reloads,
            poll_timeout,
            grpc_streams,
            wake_polls,
            push_watching,
            serve_values: false,
        }
    }

    /// The same, showing series values in `/metrics` when `serve_values` (opt-in,
    /// `--metrics-show-values`).
    pub fn with_values(mut self, serve_values: bool) -> Self {
        self.serve_values = serve_values;
        self
    }

    /// Counts one HTTP request to `endpoint` (a route template) answered `code` after `seconds`.
    ///
    /// The metric GET path is the hottest in the adapter; `with_label_values` per request
    /// would hash the labels, take the family's read lock and clone a reference-counted handle
    /// (atomic writes to one cache line that every core shares). Instead each endpoint's series
    /// are made once and found here through an `ArcSwap`'d map: a per-thread load, a string
    /// hash and a short scan of status codes.
    pub fn observe_request(&self, endpoint: &str, code: u16, seconds: f64) {
        if let Some(series) = self.request_series.load().get(endpoint) {
            series.observe(code, seconds, &self.requests, endpoint);
            return;
        }
        let made = Arc::new(EndpointSeries {
            duration: self.request_duration.with_label_values(&[endpoint]),
            codes: ArcSwap::from_pointee(Vec::new()),
        });
        made.observe(code, seconds, &self.requests, endpoint);
        self.request_series.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(endpoint.to_string())
                .or_insert_with(|| made.clone());
            map
        });
    }

    /// The text exposition of every `qma_*` family, the store's values included.
    pub fn render(&self, store: &Store, now: SystemTime) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for families we built ourselves.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        render_store(store, now, self.serve_values, &mut text);
        text
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// The request series of one endpoint: its latency histogram and a counter per status code
/// seen so far (a handful: 200, 401, 403, 404, 503...).
struct EndpointSeries {
    duration: Histogram,
    codes: ArcSwap<Vec<(u16, IntCounter)>>,
}

impl EndpointSeries {
    fn observe(&self, code: u16, seconds: f64, family: &IntCounterVec, endpoint: &str) {
        self.duration.observe(seconds);
        if let Some((_, c)) = self.codes.load().iter().find(|(c, _)| *c == code) {
            c.inc();
            return;
        }
        let counter = family.with_label_values(&[endpoint, &code.to_string()]);
        counter.inc();
        self.codes.rcu(|codes| {
            let mut codes = Vec::clone(codes);
            if !codes.iter().any(|(c, _)| *c == code) {
                codes.push((code, counter.clone()));
            }
            codes
        });
    }
}

/// Appends `qma_metric_series`, `qma_metric_data_age_seconds` and `qma_metric_unseen_keys` for
/// every configured metric, and with `values` also `qma_metric_value`. A series in error or of
/// a failed source has no value line: absence, not 0.
pub fn render_store(store: &Store, now: SystemTime, values: bool, out: &mut String) {
    if values {
        let _ = writeln!(
            out,
            "# HELP qma_metric_value The value the adapter serves for each series (absent while unavailable)."
        );
        let _ = writeln!(out, "# TYPE qma_metric_value gauge");
    }
    let mut ages = String::new();
    let mut counts = String::new();
    let mut unseen = String::new();
    for name in store.metric_names() {
        let Some((_, state)) = store.state(&name) else {
            continue;
        };
        let mut oldest = None;
        let mut errors = 0;
        let mut unseen_keys = 0;
        for s in &state.series {
            unseen_keys += usize::from(s.unseen);
            oldest = Some(oldest.map_or(s.observed_at, |o: SystemTime| o.min(s.observed_at)));
            match (&s.value, &state.failure) {
                (Ok(v), None) => {
                    if values {
                        let _ = writeln!(
                            out,
                            "qma_metric_value{{{}}} {v}",
                            value_labels(&name, &s.labels)
                        );
                    }
                }
                _ => errors += 1,
            }
        }
        let _ = writeln!(
            counts,
            "qma_metric_series{{metric=\"{name}\",state=\"ok\"}} {}",
            state.series.len() - errors
        );
        let _ = writeln!(
            counts,
            "qma_metric_series{{metric=\"{name}\",state=\"error\"}} {errors}"
        );
        let _ = writeln!(
            unseen,
            "qma_metric_unseen_keys{{metric=\"{name}\"}} {unseen_keys}"
        );
        if let Some(o) = oldest {
            let age = now
                .duration_since(o)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let _ = writeln!(
                ages,
                "qma_metric_data_age_seconds{{metric=\"{name}\"}} {age}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP qma_metric_series Series per metric, by whether they can be served."
    );
    let _ = writeln!(out, "# TYPE qma_metric_series gauge");
    out.push_str(&counts);
    let _ = writeln!(
        out,
        "# HELP qma_metric_data_age_seconds Age of the oldest observation held for each metric."
    );
    let _ = writeln!(out, "# TYPE qma_metric_data_age_seconds gauge");
    out.push_str(&ages);
    let _ = writeln!(
        out,
        "# HELP qma_metric_unseen_keys Exact keys of each metric that have not existed since the source started: served as 0 (Redis deletes an empty list or sorted set), but possibly a typo or the wrong db."
    );
    let _ = writeln!(out, "# TYPE qma_metric_unseen_keys gauge");
    out.push_str(&unseen);
}

/// `metric="…"` and the series' labels as Prometheus label pairs. Two keys that become the same
/// name (`a.b` and `a_b`) get `_2`, `_3`, ... on the later ones: Prometheus refuses a whole
/// scrape over one duplicate label.
///
/// Values are the raw ones (`key="queue:emb"`), not the encoded ones the external metrics API
/// and KEDA serve ([`crate::apimachinery::label::encode_value`]): a Prometheus label value may be any
/// UTF-8, dashboards and alerts written before the encoding keep matching, and a person reading
/// a graph sees the queue's real name.
fn value_labels(metric: &str, labels: &crate::model::Labels) -> String {
    let mut out = format!("metric=\"{}\"", escape(metric));
    let mut used = std::collections::HashSet::from(["metric".to_string()]);
    for (k, v) in labels.raw_iter() {
        let base = prometheus_label_name(k);
        let mut name = base.clone();
        let mut n = 2;
        while !used.insert(name.clone()) {
            name = format!("{base}_{n}");
            n += 1;
        }
        let _ = write!(out, ",{name}=\"{}\"", escape(v));
    }
    out
}

/// A Kubernetes label key as a Prometheus label name: invalid characters become `_`, and names
/// that would clash with our own (`metric`) or Prometheus' reserved `__` prefix get `label_`.
fn prometheus_label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s == "metric" || s.starts_with("__") || s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("label_{s}");
    }
    s
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_endpoint_and_code_through_the_cached_series() {
        let t = Telemetry::new();
        for (endpoint, code) in [("/a", 200), ("/a", 200), ("/a", 404), ("/b", 200)] {
            t.observe_request(endpoint, code, 0.001);
        }
        let store = Store::new(Vec::new(), std::time::Duration::from_secs(30));
        let text = t.render(&store, SystemTime::now());
        for line in [
            r#"qma_http_requests_total{code="200",endpoint="/a"} 2"#,
            r#"qma_http_requests_total{code="404",endpoint="/a"} 1"#,
            r#"qma_http_requests_total{code="200",endpoint="/b"} 1"#,
            r#"qma_http_request_duration_seconds_count{endpoint="/a"} 3"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn label_keys_become_valid_prometheus_names() {
        assert_eq!(prometheus_label_name("queue"), "queue");
        assert_eq!(
            prometheus_label_name("app.kubernetes.io/name"),
            "app_kubernetes_io_name"
        );
        assert_eq!(prometheus_label_name("metric"), "label_metric");
        assert_eq!(prometheus_label_name("1x"), "label_1x");
    }

    #[test]
    fn label_keys_that_clash_once_converted_are_made_unique() {
        let labels: crate::model::Labels = [
            ("a.b", "1"),
            ("a_b", "2"),
            ("metric", "3"),
            ("label_metric", "4"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let rendered = value_labels("m", &labels);
        let names: Vec<&str> = rendered
            .split(',')
            .map(|pair| pair.split('=').next().unwrap_or_default())
            .collect();
        let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{rendered}");
        assert_eq!(names.len(), 5, "{rendered}");
    }
}
