//! What every source kind provides, so that the registry ([`super::registry`]) can read its
//! config, check it, and build its poller without naming the kind anywhere else.
//!
//! A kind is a type implementing [`SourceKind`]: the shape of its connection block
//! (`sources.<name>.<kind>`) and of its metric block (`metrics[].<kind>`), the checks of both,
//! and a constructor from a [`SourceSpec`]: its name, connection, metrics and the settings a
//! poller needs, never the whole config. The built source is handed back as a [`Built`], which
//! the poller and `check` drive without knowing its type.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::MetricConfig;
use super::{Source, SourceError};
use crate::k8s::client::KubernetesConfig;
use crate::model::Sample;
use crate::primitives::ConfigError;
use crate::sources::kubernetes::owners::Owners;

/// One kind of backend (Redis, RabbitMQ, dcgm-exporter, ...).
pub trait SourceKind: 'static {
    /// The key naming the kind in the config: `sources.<name>.<NAME>`, `metrics[].<NAME>`.
    const NAME: &'static str;
    /// Whether every metric of such a source needs a `metrics[].<NAME>` block.
    const TARGET_REQUIRED: bool;
    /// The connection block.
    type Connection: DeserializeOwned + std::fmt::Debug + Clone + PartialEq + Send + Sync;
    /// The metric block: what to read.
    type Target: DeserializeOwned + std::fmt::Debug + Clone + PartialEq + Send + Sync;

    /// The connection's own poll interval, if it sets one.
    fn poll_interval(conn: &Self::Connection) -> Option<Duration>;
    /// The connection's own poll timeout, if it sets one.
    fn poll_timeout(conn: &Self::Connection) -> Option<Duration>;

    /// Checks a connection block found at `at`; `poll_timeout` is the one that applies to it.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    fn validate(
        conn: &Self::Connection,
        at: &str,
        poll_timeout: Duration,
    ) -> Result<(), ConfigError>;

    /// Checks a metric of such a source; `target` is its block (present when
    /// [`TARGET_REQUIRED`](Self::TARGET_REQUIRED): the registry checked that). `at` names the
    /// metric (`metrics[3] (name)`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    fn validate_metric(
        conn: &Self::Connection,
        metric: &MetricConfig,
        target: Option<&Self::Target>,
        at: &str,
    ) -> Result<(), ConfigError>;

    /// Reads the secrets the connection names (password files and variables).
    ///
    /// # Errors
    /// When one cannot be read.
    fn resolve_secrets(_conn: &mut Self::Connection, _at: &str) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The password files the connection reads, which the config watch re-reads.
    fn password_files(_conn: &Self::Connection) -> Vec<PathBuf> {
        Vec::new()
    }

    /// The label holding each series' own namespace, for kinds whose series belong to one
    /// (GPU workloads); `None`: the request's namespace is the metric's.
    fn namespace_label() -> Option<&'static str> {
        None
    }

    /// Whether a metric with this target having no series is itself an observed empty backlog
    /// (a Redis list pattern: Redis deletes the keys as they empty).
    fn empty_means_zero(_target: Option<&Self::Target>) -> bool {
        false
    }

    /// Whether building such a source needs the Kubernetes API.
    fn needs_kubernetes() -> bool {
        false
    }

    /// Builds the source, ready to poll.
    ///
    /// # Errors
    /// When its settings cannot be used (a CA file, no Kubernetes configuration).
    fn build(
        spec: SourceSpec<'_, Self>,
        context: &mut BuildContext,
    ) -> impl Future<Output = anyhow::Result<Built>> + Send;
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

/// What a source is built from.
pub struct SourceSpec<'a, K: SourceKind + ?Sized> {
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

type PollFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Sample>, SourceError>> + Send + 'a>>;

/// A source of any kind, as the poller and `check` drive it.
pub trait AnySource: Send + 'static {
    /// The source's configured name.
    fn name(&self) -> &str;
    /// Its kind.
    fn kind(&self) -> &'static str;
    /// One poll (a boxed future: one allocation per poll, every few seconds).
    fn poll_boxed(&mut self) -> PollFuture<'_>;
    /// Its change signal, if it has one.
    fn wake_signal(&self) -> Option<crate::wake::WakeSignal>;
}

impl<S: Source> AnySource for S {
    fn name(&self) -> &str {
        Source::name(self)
    }

    fn kind(&self) -> &'static str {
        Source::kind(self)
    }

    fn poll_boxed(&mut self) -> PollFuture<'_> {
        Box::pin(self.poll())
    }

    fn wake_signal(&self) -> Option<crate::wake::WakeSignal> {
        Source::wake(self)
    }
}

/// A built source of any kind.
pub type Built = Box<dyn AnySource>;

impl Source for Built {
    fn name(&self) -> &str {
        self.as_ref().name()
    }

    fn kind(&self) -> &'static str {
        self.as_ref().kind()
    }

    fn poll(&mut self) -> impl Future<Output = Result<Vec<Sample>, SourceError>> + Send {
        self.as_mut().poll_boxed()
    }

    fn wake(&self) -> Option<crate::wake::WakeSignal> {
        self.as_ref().wake_signal()
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

    /// The Kubernetes client and the pod owner cache, started on first use.
    ///
    /// # Errors
    /// When no Kubernetes configuration is found.
    pub async fn kube_watches(&mut self) -> anyhow::Result<KubeWatches> {
        if self.watches.is_none() {
            let client = match &self.client {
                Some(c) => c.clone(),
                None => {
                    let c = crate::k8s::client::client(&self.kubernetes).await?;
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
