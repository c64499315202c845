//! `check`: validate the config, poll every source once, and print what would be served.
//!
//! Uses the same sources and store as `serve`, so what it prints is what the API would answer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::Config;
use crate::reload::{schedule_of, store_for};
use crate::sources::build::BuildContext;
use crate::sources::redis::config::RedisMetric;
use crate::sources::{Source, SourceError};
use crate::store::{Store, render_labels};

/// What `check` prints beside the `0` of an exact key that does not exist: Redis deletes an
/// empty list, so it may be empty, or its name may be wrong.
pub const UNSEEN_NOTE: &str = "missing: empty, or a typo?";

/// The outcome of a check: the printed table and whether every series had a value.
pub struct Report {
    /// The table, one row per series (or per failed source's metric).
    pub table: String,
    /// How many rows carry an error.
    pub failed: usize,
}

/// The pause between `check`'s two polls of a source with rates: a rate needs two readings.
pub const RATE_CHECK_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// What `check` prints beside a rate: over its two polls, not the metric's window.
pub const RATE_NOTE: &str = "over check's two polls 1 s apart, not the window";

async fn poll_once<S: Source>(source: &mut S, timeout: std::time::Duration, store: &Store) {
    let outcome = tokio::time::timeout(timeout, source.poll())
        .await
        .unwrap_or(Err(SourceError::Timeout { after: timeout }))
        .map_err(|e| e.to_string());
    store.record_poll(source.name(), SystemTime::now(), outcome);
}

/// `rows` as text, each column as wide as its widest cell (what `check` and `discover` print).
pub fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// Polls every source of `config` once (twice, [`RATE_CHECK_PAUSE`] apart, where a metric
/// is a rate from counters), into a store as `serve` keeps it (`discover` reads what the
/// sources found from it).
///
/// # Errors
/// When a source cannot be built from its config.
pub async fn poll(config: &Config) -> anyhow::Result<Arc<Store>> {
    let store = Arc::new(store_for(config));
    let token = tokio_util::sync::CancellationToken::new();
    let _stop_watches = token.clone().drop_guard();
    let tracker = tokio_util::task::TaskTracker::new();
    let mut context = BuildContext::new(config.kubernetes.clone(), None, &token, &tracker);
    for (name, source) in &config.sources {
        let timeout = schedule_of(config, source).timeout;
        let mut built = source
            .build(name, &config.metrics, config.globals(), &mut context)
            .await?;
        poll_once(&mut built, timeout, &store).await;
        if config
            .metrics
            .iter()
            .any(|m| m.source == *name && m.from_counters())
        {
            tokio::time::sleep(RATE_CHECK_PAUSE).await;
            poll_once(&mut built, timeout, &store).await;
        }
    }
    Ok(store)
}

/// Polls every source of `config` once and renders the table.
///
/// # Errors
/// When a source cannot be built from its config.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let store = poll(config).await?;
    let now = SystemTime::now();
    let mut rows = vec![[
        "METRIC".to_string(),
        "LABELS".into(),
        "VALUE".into(),
        "AGE".into(),
        "ERROR / NOTE".into(),
    ]];
    let mut failed = 0;
    for m in &config.metrics {
        let Some((_, state)) = store.state(&m.name) else {
            continue;
        };
        if let Some(f) = &state.failure {
            failed += 1;
            rows.push([
                m.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                f.message.clone(),
            ]);
            continue;
        }
        if state.series.is_empty() {
            let note = match m.targets.redis.as_ref() {
                Some(RedisMetric::Library(l)) => format!(
                    "(no series: no {} queue found; check the db and prefix)",
                    l.library.as_str()
                ),
                _ => "(no series: the pattern matched nothing)".into(),
            };
            rows.push([m.name.clone(), "-".into(), "-".into(), "-".into(), note]);
        }
        for s in &state.series {
            let age = now
                .duration_since(s.observed_at)
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .unwrap_or_default();
            let (value, error) = match &s.value {
                Ok(v) => (
                    format!("{v:.3}")
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_string(),
                    if s.unseen {
                        UNSEEN_NOTE.to_string()
                    } else if m.from_counters() {
                        RATE_NOTE.to_string()
                    } else {
                        String::new()
                    },
                ),
                Err(e) => {
                    failed += 1;
                    ("-".into(), e.to_string())
                }
            };
            rows.push([m.name.clone(), render_labels(&s.labels), value, age, error]);
        }
    }
    let mut table = aligned(&rows);
    let _ = writeln!(
        table,
        "\n{} metric(s), {} error(s), polled in {:.0} ms",
        config.metrics.len(),
        failed,
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(Report { table, failed })
}
