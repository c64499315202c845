//! The running sources and how a changed config file replaces them, and what the poller and
//! the store are given for a config ([`schedule_of`], [`metric_infos`], [`store_for`]).
//!
//! [`SourceSet::apply`] is used at start and on every reload: sources whose settings, metrics
//! and schedule are unchanged keep polling (and their metrics keep their values); changed ones
//! are rebuilt, removed ones stopped, new ones started. Everything that can fail (building a
//! source) happens before anything running is touched, so a reload that fails leaves the old
//! configuration serving. [`spawn_watch`] re-reads the file (a mounted ConfigMap changes in
//! place, by a symlink swap) and the password files it names (a rotated Secret), and applies a
//! valid new config; an invalid one is logged and counted. A changed password changes the
//! source's settings, so that source is rebuilt and connects with the new one.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, MetricConfig, SourceConfig};
use crate::file_watch::FileWatch;
use crate::poller::{PollContext, PollerHandle, Schedule};
use crate::security::keda_clients::KedaClients;
use crate::sources::build::BuildContext;
use crate::store::{MetricInfo, Store};
use crate::telemetry::Telemetry;

/// Builds the store for `config`'s metrics.
pub fn store_for(config: &Config) -> Store {
    Store::new(metric_infos(config), config.max_staleness.0)
}

/// What the store and the API surfaces know of each configured metric.
pub fn metric_infos(config: &Config) -> Vec<MetricInfo> {
    config
        .metrics
        .iter()
        .map(|m| MetricInfo {
            name: m.name.clone(),
            source: m.source.clone(),
            description: m.description.clone(),
            namespaces: m.namespaces.clone(),
            namespace_label: config
                .sources
                .get(&m.source)
                .and_then(SourceConfig::namespace_label),
            empty_means_zero: config
                .sources
                .get(&m.source)
                .is_some_and(|s| s.empty_means_zero(m)),
        })
        .collect()
}

/// The schedule of `source`: its own interval and timeout, else the config's.
pub fn schedule_of(config: &Config, source: &SourceConfig) -> Schedule {
    Schedule {
        interval: source.poll_interval(config.poll_interval.0),
        timeout: source.poll_timeout(config.poll_timeout.0),
        max_backoff: config.max_backoff.0,
    }
}

/// Everything a source's poll loop was built from: equal fingerprints, nothing to restart.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    source: SourceConfig,
    metrics: Vec<MetricConfig>,
    schedule: Schedule,
    discovery_interval: Duration,
    pattern_key_retention: Duration,
}

impl Fingerprint {
    fn of(config: &Config, name: &str, source: &SourceConfig) -> Self {
        Fingerprint {
            source: source.clone(),
            metrics: config.metrics_of(name).cloned().collect(),
            schedule: schedule_of(config, source),
            discovery_interval: config.discovery_interval.0,
            pattern_key_retention: config.pattern_key_retention.0,
        }
    }
}

/// The running poll loops, by source name.
pub struct SourceSet {
    pollers: PollContext,
    builder: BuildContext,
    running: HashMap<String, (Fingerprint, PollerHandle)>,
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Sources (re)started.
    pub started: Vec<String>,
    /// Sources stopped for good.
    pub stopped: Vec<String>,
    /// Sources left running.
    pub kept: usize,
}

impl SourceSet {
    /// An empty set, building its sources with `builder`.
    pub fn new(pollers: PollContext, builder: BuildContext) -> Self {
        SourceSet {
            pollers,
            builder,
            running: HashMap::new(),
        }
    }

    /// Makes the running sources match `config`, and the store its metrics.
    ///
    /// # Errors
    /// When a new or changed source cannot be built; nothing running has been changed then.
    pub async fn apply(&mut self, config: &Config) -> anyhow::Result<Applied> {
        let mut built = Vec::new();
        for (name, source) in &config.sources {
            let fingerprint = Fingerprint::of(config, name, source);
            if self
                .running
                .get(name)
                .is_some_and(|(f, _)| *f == fingerprint)
            {
                continue;
            }
            let source_built = source
                .build(name, &config.metrics, config.globals(), &mut self.builder)
                .await?;
            built.push((
                name.clone(),
                fingerprint,
                source_built,
                schedule_of(config, source),
            ));
        }

        // From here on nothing fails: stop what changes, switch the store, start the new.
        let restarted: HashSet<String> = built.iter().map(|(n, ..)| n.clone()).collect();
        // Values survive a restart caused by the metric list or schedule alone (same backend,
        // same reads: the new loop's first poll refreshes them); a changed connection resets
        // its metrics, so nothing read from the old backend is served as the new one's.
        let reset: HashSet<String> = built
            .iter()
            .filter(|(name, fingerprint, ..)| {
                self.running
                    .get(name)
                    .is_none_or(|(old, _)| old.source != fingerprint.source)
            })
            .map(|(n, ..)| n.clone())
            .collect();
        // A metric that now reads another key, pattern, queue or measure drops its series: the
        // old key's values must not be served under the new settings until the first poll.
        let changed: HashSet<String> = config
            .metrics
            .iter()
            .filter(|m| {
                self.running
                    .get(&m.source)
                    .is_some_and(|(old, _)| old.metrics.iter().any(|o| o.name == m.name && o != *m))
            })
            .map(|m| m.name.clone())
            .collect();
        let mut applied = Applied::default();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let removed = !config.sources.contains_key(&name);
            if removed || restarted.contains(&name) {
                if let Some((_, handle)) = self.running.remove(&name) {
                    handle.stop().await;
                }
                if removed {
                    self.pollers.heartbeats.forget(&name);
                    applied.stopped.push(name);
                }
            }
        }
        self.pollers.store.reconfigure(
            metric_infos(config),
            config.max_staleness.0,
            &reset,
            &changed,
        );
        applied.kept = self.running.len();
        for (name, fingerprint, source, schedule) in built {
            let handle = self.pollers.spawn(source, schedule);
            applied.started.push(name.clone());
            self.running.insert(name, (fingerprint, handle));
        }
        applied.started.sort();
        applied.stopped.sort();
        Ok(applied)
    }
}

/// What a reload changes: the running sources and the KEDA access rules.
pub struct Live {
    /// The poll loops.
    pub sources: SourceSet,
    /// The `keda_clients` rules the gRPC scaler reads on every call.
    pub keda_clients: Arc<ArcSwap<KedaClients>>,
}

/// Re-reads `path` and the password files of the running config every `every`; when one
/// changes, loads and applies the config again (a new password rebuilds its source; new
/// `keda_clients` rules apply to the next gRPC call).
/// An invalid config (or one that changes what needs a restart: the `kubernetes` block) is
/// logged with the reason and counted, and the running config keeps serving.
pub fn spawn_watch(
    path: PathBuf,
    every: Duration,
    mut current: Config,
    live: Live,
    telemetry: Telemetry,
    token: CancellationToken,
    tracker: &TaskTracker,
) {
    let Live {
        mut sources,
        keda_clients,
    } = live;
    tracker.spawn(async move {
        let watched = |config: &Config| {
            let mut files = vec![path.clone()];
            files.extend(config.password_files());
            files
        };
        let mut watch = FileWatch::new(watched(&current), every);
        while let Some(contents) = watch.changed(&token).await {
            // An invalid file is reported once, not on every tick.
            watch.accept(contents);
            let result = match Config::load(&path) {
                Ok(next) if next == current => "unchanged",
                Ok(next) if next.kubernetes != current.kubernetes => {
                    tracing::error!(config = %path.display(), "config not reloaded: the kubernetes block changed, which needs a restart; the previous config keeps serving");
                    "invalid"
                }
                Ok(next) => match sources.apply(&next).await {
                    Ok(applied) => {
                        let clients = KedaClients::from_config(next.keda_clients.as_deref());
                        if clients != **keda_clients.load() {
                            // Without mutual TLS a new list refuses every caller: closed,
                            // never open.
                            keda_clients.store(Arc::new(clients));
                            tracing::info!(config = %path.display(), "keda_clients reloaded");
                        }
                        tracing::info!(config = %path.display(), started = ?applied.started, stopped = ?applied.stopped, kept = applied.kept, metrics = next.metrics.len(), "config reloaded");
                        if next.password_files() != current.password_files() {
                            watch = FileWatch::new(watched(&next), every);
                        }
                        current = next;
                        "applied"
                    }
                    Err(e) => {
                        tracing::error!(config = %path.display(), error = %format!("{e:#}"), "config not reloaded; the previous config keeps serving");
                        "invalid"
                    }
                },
                Err(e) => {
                    tracing::error!(config = %path.display(), error = %e, "config not reloaded; the previous config keeps serving");
                    "invalid"
                }
            };
            telemetry
                .config_reloads
                .with_label_values(&[result])
                .inc();
        }
    });
}
