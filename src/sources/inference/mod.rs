//! Model servers' own signals per workload: vLLM, TGI, Triton and SGLang queue, batch and
//! KV-cache metrics scraped from their pods, so a GPU inference Deployment scales on its own
//! servers' queue without a Prometheus in the path.
//!
//! One poll lists the selected ready pods from a watch ([`crate::sources::kubernetes::pods`]),
//! scrapes them all at once, each bounded in time and size, reads each body with the shared
//! exposition parser and hands the scrapes to [`plans`], which takes each metric's series per
//! pod ([`reading`], names from [`presets`], counter rates from [`crate::sources::rates`]) and combines pods
//! per workload ([`crate::sources::kubernetes::workloads`]) as the owner cache resolves them.
//! Or a Prometheus that already scrapes the pods answers one query ([`prometheus`]).
//!
//! Unknown is never 0: a pod that fails, times out or lacks the family is an unknown member
//! of its workload (a sum is then unknown, a mean or max uses the pods that answered), a
//! workload with no known pod is an error series, and a poll that reaches none of its pods
//! fails as a whole. No pods at all (a workload scaled to zero) is no series: nothing was
//! observed, and the waking signal comes from the queue in front of the servers (README).

pub mod config;
pub mod plans;
pub mod presets;
pub mod prometheus;
pub mod reading;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use self::config::{InferenceSourceConfig, InferenceTarget};
use self::plans::{Plans, PodScrape, unix_now};
use super::build::{Blocks, BuildContext, SourceSpec};
use super::source::{Source, SourceError};
use crate::model::Sample;
use crate::primitives::{ConfigError, redact_url};
use crate::sources::exposition::fetch::{self, Fetch};
use crate::sources::exposition::parse::parse_with;
use crate::sources::exposition::prometheus_api;
use crate::sources::kubernetes::owners::Owners;
use crate::sources::kubernetes::pods::{PodPort, SelectedPods};
use crate::sources::kubernetes::workloads::{PodRef, validate_metric_labels};
use crate::sources::metric::MetricConfig;

/// Where the servers' metrics come from.
pub enum Targets {
    /// The selected pods, scraped directly.
    Pods {
        /// The watched pods.
        pods: SelectedPods,
        /// Which port, scheme and path to scrape.
        port: PodPort,
        /// `http` or `https`.
        scheme: String,
        /// `/metrics`.
        path: String,
    },
    /// A Prometheus that scrapes them: one query per poll.
    Prometheus {
        /// The HTTP API's base URL.
        url: String,
        /// The PromQL query (every family read, and `up`).
        promql: String,
    },
}

/// Model-server pods and the metrics read from them.
pub struct InferenceSource {
    name: String,
    targets: Targets,
    owners: Arc<Owners>,
    client: reqwest::Client,
    fetch: Fetch,
    plans: Plans,
    /// The families the metrics read: a scrape's other lines are skipped unread.
    families: Vec<String>,
    /// Malformed-line counts per pod at the last scrape, to log only changes.
    malformed: HashMap<PodRef, usize>,
}

/// The model-server kind: `sources.<name>.inference` and the optional `metrics[].inference`.
pub struct Inference;

impl Blocks for Inference {
    type Connection = InferenceSourceConfig;
    type Target = InferenceTarget;
}

/// Checks metric `m` of a inference source (`at` names it); `target` is its block, if any.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field.
pub fn validate_metric(
    conn: &InferenceSourceConfig,
    m: &MetricConfig,
    target: Option<&InferenceTarget>,
    at: &str,
) -> Result<(), ConfigError> {
    conn.recipe(m.measure, target, at)?;
    validate_metric_labels(at, &m.labels, &conn.scrape.extra_labels)
}

/// Builds a inference source from its spec, starting the Kubernetes watches it needs.
///
/// # Errors
/// When its settings cannot be used or no Kubernetes configuration is found.
pub async fn build(
    spec: SourceSpec<'_, Inference>,
    context: &mut BuildContext,
) -> anyhow::Result<InferenceSource> {
    let watches = context.kube_watches().await?;
    let conn = spec.connection;
    let plans = Plans::new(conn, &spec.metrics)?;
    let targets = match (&conn.pods, &conn.prometheus) {
        (Some(p), _) => Targets::Pods {
            pods: SelectedPods::watch(
                watches.client.clone(),
                p.namespace.as_deref(),
                &p.selector,
                &watches.token,
                &watches.tracker,
            ),
            port: p.port.clone(),
            scheme: p.scheme.clone(),
            path: p.path.clone(),
        },
        (None, Some(p)) => Targets::Prometheus {
            url: p.url.clone(),
            promql: prometheus_api::series_and_times(&plans.families(), p.matchers.as_deref()),
        },
        (None, None) => anyhow::bail!("needs pods or prometheus"),
    };
    Ok(InferenceSource {
        name: spec.name.to_string(),
        targets,
        owners: watches.owners.clone(),
        client: fetch::client(conn.scrape.ca_file.as_deref())?,
        fetch: conn.scrape.fetch(spec.poll_timeout),
        families: plans.families().into_iter().map(str::to_string).collect(),
        plans,
        malformed: HashMap::new(),
    })
}

impl InferenceSource {
    /// Whether the Kubernetes caches this source reads have completed their first list.
    fn caches_ready(&self) -> bool {
        let pods = match &self.targets {
            Targets::Pods { pods, .. } => pods.is_listed(),
            Targets::Prometheus { .. } => true,
        };
        pods && self.owners.is_ready()
    }

    /// Logs malformed lines when a pod's count changes (not on every poll).
    fn note_malformed(
        &mut self,
        pod: &PodRef,
        endpoint: &str,
        count: usize,
        first: &[(usize, String)],
    ) {
        let before = self.malformed.insert(pod.clone(), count);
        if count > 0 && before != Some(count) {
            tracing::warn!(
                source = %self.name,
                pod = %format!("{}/{}", pod.namespace, pod.name),
                endpoint = %redact_url(endpoint),
                malformed = count,
                first = ?first,
                "skipped malformed lines in a model server's metrics"
            );
        }
    }

    /// Reads every scrape into samples; `Err` when none of the pods could be read.
    fn samples(&mut self, scrapes: &[PodScrape<'_>]) -> Result<Vec<Sample>, SourceError> {
        let failures: Vec<(&PodScrape<'_>, &String)> = scrapes
            .iter()
            .filter_map(|s| s.outcome.as_ref().err().map(|e| (s, e)))
            .collect();
        if let Some((first, message)) = failures.first() {
            tracing::warn!(
                source = %self.name,
                failed = failures.len(),
                pods = scrapes.len(),
                first = %format!("{}/{} ({}): {message}", first.pod.namespace, first.pod.name, redact_url(&first.endpoint)),
                "model-server pods could not be read; they are unknown members of their workloads this poll"
            );
            if failures.len() == scrapes.len() {
                return Err(SourceError::Connect {
                    target: format!("all {} model-server pod(s)", scrapes.len()),
                    message: format!("{}/{}: {message}", first.pod.namespace, first.pod.name),
                });
            }
        }

        let seen: BTreeSet<&PodRef> = scrapes.iter().map(|s| &s.pod).collect();
        self.malformed.retain(|p, _| seen.contains(p));
        let owners = &self.owners;
        let unresolved = std::cell::Cell::new(0usize);
        let samples = self.plans.read(scrapes, |s| {
            let w = match s.meta {
                Some(meta) => owners.resolve_meta(&s.pod.namespace, &s.pod.name, meta),
                None => owners.resolve(&s.pod.namespace, &s.pod.name),
            };
            unresolved.set(unresolved.get() + usize::from(w.is_err()));
            w.ok()
        });
        if unresolved.get() > 0 {
            tracing::debug!(source = %self.name, unresolved = unresolved.get(), "pods whose owner is not in the cache yet; left out until the next poll");
        }
        Ok(samples)
    }
}

impl Source for InferenceSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "inference"
    }

    async fn poll(&mut self) -> Result<Vec<Sample>, SourceError> {
        // At start-up the caches list while the first poll begins: give them the scrape
        // timeout rather than failing a poll that a moment's wait would have served.
        let deadline = tokio::time::Instant::now() + self.fetch.timeout;
        while !self.caches_ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !self.owners.is_ready() {
            return Err(SourceError::Connect {
                target: "the Kubernetes API".into(),
                message: "the pod and ReplicaSet caches have not been listed yet".into(),
            });
        }
        match &self.targets {
            Targets::Pods {
                pods,
                port,
                scheme,
                path,
            } => {
                let targets =
                    pods.targets(port, scheme, path)
                        .map_err(|message| SourceError::Connect {
                            target: "the Kubernetes API".into(),
                            message,
                        })?;
                let (client, fetch) = (&self.client, self.fetch);
                let bodies = futures_util::future::join_all(targets.iter().map(|t| async move {
                    let body = match &t.url {
                        Ok(url) => fetch::scrape(client, url, fetch).await,
                        Err(e) => Err(e.clone()),
                    };
                    (body, unix_now())
                }))
                .await;
                let families = &self.families;
                let parsed: Vec<_> = bodies
                    .iter()
                    .map(|(body, _)| {
                        body.as_ref()
                            .map(|b| parse_with(b, |name| families.iter().any(|f| f == name)))
                    })
                    .collect();
                let mut scrapes = Vec::with_capacity(targets.len());
                for ((t, (_, at)), p) in targets.iter().zip(&bodies).zip(parsed) {
                    let endpoint = t.url.clone().unwrap_or_default();
                    let outcome = match p {
                        Ok(p) => {
                            self.note_malformed(&t.pod, &endpoint, p.malformed, &p.first_malformed);
                            Ok(p.samples)
                        }
                        Err(e) => Err(e.clone()),
                    };
                    scrapes.push(PodScrape {
                        pod: t.pod.clone(),
                        meta: Some(&t.meta),
                        endpoint,
                        outcome,
                        at: *at,
                        observed_at: None,
                    });
                }
                self.samples(&scrapes)
            }
            Targets::Prometheus { url, promql } => {
                let result = prometheus_api::instant(&self.client, url, promql, self.fetch)
                    .await
                    .map_err(|message| SourceError::Connect {
                        target: format!("Prometheus {}", redact_url(url)),
                        message,
                    })?;
                let endpoint = format!("Prometheus {}", redact_url(url));
                let (pods, unattributed) = prometheus::split(&result);
                if unattributed > 0 {
                    tracing::debug!(source = %self.name, unattributed, "Prometheus series without namespace and pod labels ignored");
                }
                let now = unix_now();
                let scrapes: Vec<PodScrape<'_>> = pods
                    .into_iter()
                    .map(|(pod, answer)| PodScrape {
                        pod,
                        meta: None,
                        endpoint: endpoint.clone(),
                        at: answer.oldest.unwrap_or(now),
                        observed_at: answer.oldest.and_then(prometheus_api::unix_time),
                        outcome: match answer.up {
                            Some(false) => {
                                Err("Prometheus reports the pod down (up == 0)".to_string())
                            }
                            _ => Ok(answer.samples),
                        },
                    })
                    .collect();
                self.samples(&scrapes)
            }
        }
    }
}
