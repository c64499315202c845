//! What building a source takes: its [`SourceSpec`] (name, connection, metrics with their
//! blocks, and the settings a poller needs, never the whole config) and the [`BuildContext`]
//! that sources needing Kubernetes share. It names no kind: [`super::kinds`] does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::kubernetes::owners::Owners;
use super::metric::MetricConfig;
use crate::kube_client::KubernetesConfig;

/// A kind's two config block types: what [`SourceSpec`] is generic over, so that each kind's
/// constructor takes its own types. Implemented by each kind's unit type (`redis::Redis`).
pub trait Blocks {
    /// The connection block (`sources.<name>.<kind>`).
    type Connection;
    /// The metric block (`metrics[].<kind>`).
    type Target;
}

/// The top-level settings every source's spec carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Globals {
    /// The poll timeout of sources that set none.
    pub poll_timeout: Duration,
    /// Time between key discoveries for pattern metrics.
    pub discovery_interval: Duration,
    /// How long a pattern's list or sorted-set key stays polled after it stopped existing.
    pub pattern_key_retention: Duration,
}

/// What a source is built from: never the whole config.
pub struct SourceSpec<'a, K: Blocks> {
    /// `sources.<name>`.
    pub name: &'a str,
    /// Its connection block.
    pub connection: &'a K::Connection,
    /// Its metrics, each with its block (if it has one).
    pub metrics: Vec<(&'a MetricConfig, Option<&'a K::Target>)>,
    /// The poll timeout that applies to it (its own, else the global one).
    pub poll_timeout: Duration,
    /// Time between key discoveries for pattern metrics.
    pub discovery_interval: Duration,
    /// How long a pattern's list or sorted-set key stays polled after it stopped existing.
    pub pattern_key_retention: Duration,
}

impl<'a, K: Blocks> SourceSpec<'a, K> {
    /// The spec of source `name` with connection `connection` whose own poll timeout (if any)
    /// is `own_timeout`: its metrics out of `metrics`, each with its block as `target` reads it.
    pub fn new(
        name: &'a str,
        connection: &'a K::Connection,
        poll_timeout: Duration,
        metrics: &'a [MetricConfig],
        target: impl Fn(&'a MetricConfig) -> Option<&'a K::Target>,
        globals: Globals,
    ) -> Self {
        SourceSpec {
            name,
            connection,
            metrics: metrics
                .iter()
                .filter(|m| m.source == name)
                .map(|m| (m, target(m)))
                .collect(),
            poll_timeout,
            discovery_interval: globals.discovery_interval,
            pattern_key_retention: globals.pattern_key_retention,
        }
    }
}

/// What building sources shares: the Kubernetes client and the pod owner cache, started when
/// the first source that needs them is built, so a config without such sources never talks to
/// Kubernetes; and the token and tracker their watches stop with.
pub struct BuildContext {
    kubernetes: KubernetesConfig,
    client: Option<kube::Client>,
    watches: Option<KubeWatches>,
    token: CancellationToken,
    tracker: TaskTracker,
}

/// The Kubernetes client and the pod owner cache, shared by every source that maps pods to
/// workloads.
#[derive(Clone)]
pub struct KubeWatches {
    /// The client.
    pub client: kube::Client,
    /// Pod -> owning workload.
    pub owners: Arc<Owners>,
    /// What the watches stop with.
    pub token: CancellationToken,
    /// Where their tasks run.
    pub tracker: TaskTracker,
}

impl BuildContext {
    /// A context using `client` when one exists already (else one is made from `kubernetes`
    /// when needed); the watches it starts stop with `token`.
    pub fn new(
        kubernetes: KubernetesConfig,
        client: Option<kube::Client>,
        token: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        BuildContext {
            kubernetes,
            client,
            watches: None,
            token: token.clone(),
            tracker: tracker.clone(),
        }
    }

    /// The Kubernetes client, made on first use (no watch started).
    ///
    /// # Errors
    /// When no Kubernetes configuration is found.
    pub async fn kube_client(&mut self) -> anyhow::Result<kube::Client> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = crate::kube_client::client(&self.kubernetes).await?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// The Kubernetes client and the pod owner cache, started on first use.
    ///
    /// # Errors
    /// When no Kubernetes configuration is found.
    pub async fn kube_watches(&mut self) -> anyhow::Result<KubeWatches> {
        if self.watches.is_none() {
            let client = match &self.client {
                Some(c) => c.clone(),
                None => {
                    let c = crate::kube_client::client(&self.kubernetes).await?;
                    self.client = Some(c.clone());
                    c
                }
            };
            let owners = Arc::new(Owners::watch(client.clone(), &self.token, &self.tracker));
            self.watches = Some(KubeWatches {
                client,
                owners,
                token: self.token.clone(),
                tracker: self.tracker.clone(),
            });
        }
        self.watches
            .clone()
            .context("the Kubernetes watches could not be started")
    }
}
