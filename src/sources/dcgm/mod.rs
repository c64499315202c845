//! NVIDIA dcgm-exporter: GPU utilization per workload, for GPU inference HPAs.
//!
//! One poll scrapes every exporter endpoint concurrently ([`scrape`]), reads each payload
//! leniently ([`crate::sources::exposition::parse`]) into per-GPU readings attributed to pods
//! ([`gpus`]), resolves pods to their workloads through the Kubernetes owner cache
//! ([`crate::sources::kubernetes::owners`]) and combines them per pod ([`aggregate`]), then per
//! workload ([`crate::sources::kubernetes::workloads`]). Endpoints come from the config or from
//! a Service's EndpointSlices ([`crate::sources::kubernetes::endpoint_slices`]); or a Prometheus
//! that scrapes the exporters answers one query instead ([`prometheus`]), each of its targets
//! an endpoint.
//!
//! Unknown is never 0: an endpoint that fails keeps the pods it reported last as unknown
//! members of their workloads, a workload whose GPUs are all unknown is an error series, and a
//! poll that reaches no endpoint at all fails as a whole.

pub mod aggregate;
pub mod config;
pub mod gpus;
pub mod prometheus;
pub mod scrape;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use self::aggregate::per_pod;
use self::config::{DcgmSourceConfig, DcgmTarget, Discover, MEASURES};
use self::gpus::{Alias, GpuReading, PodRef};
use self::scrape::{Fetch, scrape_all};
use super::build::{Blocks, BuildContext, SourceSpec};
use super::source::{Source, SourceError};
use crate::model::{Labels, Sample, SeriesError};
use crate::primitives::ConfigError;
use crate::primitives::redact_url;
use crate::sources::kubernetes::endpoint_slices::ServiceEndpoints;
use crate::sources::kubernetes::owners::{Owners, Workload};
use crate::sources::kubernetes::workloads::{
    PodKey, PodValue, SeriesKey, WorkloadAggregate, per_group, validate_metric_labels,
};
use crate::sources::measure::Measure;
use crate::sources::metric::MetricConfig;

/// Where the exporters are.
pub enum Endpoints {
    /// A fixed list from the config.
    Static(Vec<String>),
    /// A Service's ready endpoints, followed through its EndpointSlices.
    Discovered {
        /// The watched slices.
        service: ServiceEndpoints,
        /// Which port, scheme and path to scrape.
        discover: Discover,
    },
    /// A Prometheus that scrapes the exporters: one query per poll.
    Prometheus {
        /// The HTTP API's base URL.
        url: String,
        /// The PromQL selector (every alias's metric and `up`).
        promql: String,
    },
}

impl Endpoints {
    /// The exporter URLs to scrape; none in Prometheus mode, whose answer names its targets.
    fn urls(&self) -> Result<Vec<String>, SourceError> {
        match self {
            Endpoints::Static(list) => Ok(list.clone()),
            Endpoints::Prometheus { .. } => Ok(Vec::new()),
            Endpoints::Discovered { service, discover } => {
                let urls = service
                    .urls(&discover.port, &discover.scheme, &discover.path)
                    .map_err(|message| SourceError::Connect {
                        target: "the Kubernetes API".into(),
                        message,
                    })?;
                if urls.is_empty() {
                    return Err(SourceError::Connect {
                        target: format!("service {}", service.describe()),
                        message: format!("no ready endpoint serves port {:?}", discover.port),
                    });
                }
                Ok(urls)
            }
        }
    }
}

struct MetricPlan {
    name: Arc<str>,
    labels: Labels,
    measure: Measure,
    aggregate: WorkloadAggregate,
}

/// A set of dcgm-exporter endpoints and the GPU metrics read from them.
pub struct DcgmSource {
    name: String,
    endpoints: Endpoints,
    owners: Arc<Owners>,
    client: reqwest::Client,
    /// Time and size allowed to each scrape or query.
    fetch: Fetch,
    aliases: Vec<Alias>,
    extra_names: Vec<String>,
    extra_from: Vec<String>,
    metrics: Vec<MetricPlan>,
    /// Pods (and their GPU counts) each endpoint reported at its last successful scrape: when it
    /// fails, these are the GPUs that become unknown.
    last_pods: HashMap<String, Vec<(PodKey, usize)>>,
    /// Malformed-line counts per endpoint at the last scrape, to log only changes.
    malformed: HashMap<String, usize>,
}

/// The dcgm-exporter kind: `sources.<name>.dcgm` and the optional `metrics[].dcgm`.
pub struct Dcgm;

impl Blocks for Dcgm {
    type Connection = DcgmSourceConfig;
    type Target = DcgmTarget;
}

/// Checks metric `m` of a dcgm source (`at` names it); `target` is its block, if any.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field.
pub fn validate_metric(
    conn: &DcgmSourceConfig,
    m: &MetricConfig,
    _target: Option<&DcgmTarget>,
    at: &str,
) -> Result<(), ConfigError> {
    if !MEASURES.contains(&m.measure) {
        return Err(ConfigError::invalid(
            format!("{at}.measure"),
            format!(
                "{} does not apply to a dcgm source; it has {:?}",
                m.measure,
                MEASURES.iter().map(|m| m.as_str()).collect::<Vec<_>>()
            ),
        ));
    }
    validate_metric_labels(at, &m.labels, &conn.scrape.extra_labels)?;
    Ok(())
}

/// Builds a dcgm source from its spec, starting the Kubernetes watches it needs.
///
/// # Errors
/// When its settings cannot be used or no Kubernetes configuration is found.
pub async fn build(
    spec: SourceSpec<'_, Dcgm>,
    context: &mut BuildContext,
) -> anyhow::Result<DcgmSource> {
    let watches = context.kube_watches().await?;
    let conn = spec.connection;
    let endpoints = match (&conn.endpoints, &conn.discover) {
        (_, Some(d)) => Endpoints::Discovered {
            service: ServiceEndpoints::watch(
                watches.client.clone(),
                &d.namespace,
                &d.service,
                &watches.token,
                &watches.tracker,
            ),
            discover: d.clone(),
        },
        (Some(list), None) => Endpoints::Static(list.clone()),
        (None, None) => match &conn.prometheus {
            Some(p) => Endpoints::Prometheus {
                url: p.url.clone(),
                promql: prometheus::query(&conn.all_aliases(), p.matchers.as_deref()),
            },
            None => anyhow::bail!("needs endpoints, discover or prometheus"),
        },
    };
    Ok(DcgmSource::new(&spec, endpoints, watches.owners.clone())?)
}

impl DcgmSource {
    /// Builds the source named `name`. Does not connect: the first poll scrapes.
    ///
    /// # Errors
    /// [`SourceError::Config`] when the CA file cannot be read or the HTTP client not built.
    pub fn new(
        spec: &SourceSpec<'_, Dcgm>,
        endpoints: Endpoints,
        owners: Arc<Owners>,
    ) -> Result<Self, SourceError> {
        let (name, conn) = (spec.name, spec.connection);
        let client = crate::sources::exposition::fetch::client(conn.scrape.ca_file.as_deref())?;
        let poll_timeout = spec.poll_timeout;
        let aliases = conn.all_aliases();
        let (extra_names, extra_from) = conn.scrape.extra_labels();
        let metrics = spec
            .metrics
            .iter()
            .map(|(m, target)| MetricPlan {
                name: Arc::from(m.name.as_str()),
                labels: Labels::from(&m.labels),
                measure: m.measure,
                aggregate: target.cloned().unwrap_or_default().aggregate.into(),
            })
            .collect();
        Ok(DcgmSource {
            name: name.to_string(),
            endpoints,
            owners,
            client,
            fetch: conn.scrape.fetch(poll_timeout),
            aliases,
            extra_names,
            extra_from,
            metrics,
            last_pods: HashMap::new(),
            malformed: HashMap::new(),
        })
    }

    /// Whether the Kubernetes caches this source reads (owners, discovered endpoints) have
    /// completed their first list: polls before that fail with "not listed yet".
    pub fn caches_ready(&self) -> bool {
        let endpoints = match &self.endpoints {
            Endpoints::Static(_) | Endpoints::Prometheus { .. } => true,
            Endpoints::Discovered { service, .. } => service.is_listed(),
        };
        endpoints && self.owners.is_ready()
    }

    /// Logs malformed lines when an endpoint's count changes (not on every poll).
    fn note_malformed(&mut self, endpoint: &str, count: usize, first: &[(usize, String)]) {
        let before = self.malformed.insert(endpoint.to_string(), count);
        if count > 0 && before != Some(count) {
            tracing::warn!(
                source = %self.name,
                endpoint = %redact_url(endpoint),
                malformed = count,
                first = ?first,
                "skipped malformed exporter lines"
            );
        }
    }
}

/// The signal a measure reads from one GPU.
fn signal(measure: Measure) -> fn(&GpuReading) -> Option<f64> {
    match measure {
        Measure::MemoryUsedRatio => GpuReading::memory_used_ratio,
        Measure::PowerWatts => |g| g.values.get(&gpus::Field::PowerWatts).copied(),
        _ => GpuReading::utilization,
    }
}

impl Source for DcgmSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "dcgm"
    }

    async fn poll(&mut self) -> Result<Vec<Sample>, SourceError> {
        // At start-up the caches list while the first poll begins: give them the scrape
        // timeout rather than failing a poll that a moment's wait would have served.
        let deadline = tokio::time::Instant::now() + self.fetch.timeout;
        while !self.caches_ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let urls = self.endpoints.urls()?;
        if !self.owners.is_ready() {
            return Err(SourceError::Connect {
                target: "the Kubernetes API".into(),
                message: "the pod and ReplicaSet caches have not been listed yet".into(),
            });
        }
        let scrapes = match &self.endpoints {
            Endpoints::Prometheus { url, promql } => {
                let targets = prometheus::query_targets(
                    &self.client,
                    url,
                    promql,
                    self.fetch,
                    &self.aliases,
                    &self.extra_from,
                )
                .await
                .map_err(|message| SourceError::Connect {
                    target: format!("Prometheus {}", redact_url(url)),
                    message,
                })?;
                if targets.is_empty() {
                    return Err(SourceError::BadReply {
                        what: format!(
                            "Prometheus {} has no dcgm-exporter series for the query {promql}",
                            redact_url(url)
                        ),
                    });
                }
                targets
            }
            _ => {
                scrape_all(
                    &self.client,
                    &urls,
                    self.fetch,
                    &self.aliases,
                    &self.extra_from,
                )
                .await
            }
        };
        // One scrape per endpoint: each exporter, or each target Prometheus knows.
        let endpoints: Vec<String> = scrapes.iter().map(|s| s.endpoint.clone()).collect();

        let mut readings: Vec<GpuReading> = Vec::new();
        let mut unknown: BTreeMap<PodKey, usize> = BTreeMap::new();
        let mut failures: Vec<(String, String)> = Vec::new();
        // Pods whose readings are older than this poll (relayed by Prometheus), and how old.
        let mut seen_at: BTreeMap<PodKey, SystemTime> = BTreeMap::new();
        for s in scrapes {
            self.note_malformed(&s.endpoint, s.malformed, &s.first_malformed);
            match s.outcome {
                Ok(r) => {
                    let pods = pods_of(&r);
                    if let Some(at) = s.observed_at {
                        for (key, _) in &pods {
                            let t = seen_at.entry(key.clone()).or_insert(at);
                            *t = (*t).min(at);
                        }
                    }
                    self.last_pods.insert(s.endpoint, pods);
                    readings.extend(r);
                }
                Err(e) => {
                    // Its last pods stay as unknown members; one gone from the cluster does not
                    // resolve below and so belongs to no workload any more.
                    for (key, gpus) in self.last_pods.get(&s.endpoint).into_iter().flatten() {
                        unknown.insert(key.clone(), *gpus);
                    }
                    failures.push((s.endpoint, e));
                }
            }
        }
        self.last_pods.retain(|e, _| endpoints.contains(e));
        self.malformed.retain(|e, _| endpoints.contains(e));
        if !failures.is_empty() {
            tracing::warn!(
                source = %self.name,
                failed = failures.len(),
                endpoints = endpoints.len(),
                first = %format!("{}: {}", redact_url(&failures[0].0), failures[0].1),
                "dcgm-exporter endpoints failed; their GPUs are unknown this poll"
            );
        }
        if failures.len() == endpoints.len() {
            let (endpoint, message) = &failures[0];
            return Err(SourceError::Connect {
                target: format!("all {} dcgm-exporter endpoint(s)", endpoints.len()),
                message: format!("{}: {message}", redact_url(endpoint)),
            });
        }

        // Resolve each pod once per poll, for every metric.
        let mut owners: HashMap<PodRef, Option<Workload>> = HashMap::new();
        let pods = readings
            .iter()
            .filter_map(|r| r.pod.as_ref())
            .chain(unknown.keys().map(|k| &k.pod));
        let mut unresolved = 0usize;
        for pod in pods {
            owners.entry(pod.clone()).or_insert_with(|| {
                let w = self.owners.resolve(&pod.namespace, &pod.name).ok();
                unresolved += usize::from(w.is_none());
                w
            });
        }
        if unresolved > 0 {
            tracing::debug!(source = %self.name, unresolved, "pods not in the owner cache yet; left out until the next poll");
        }
        let group_of = |key: &PodKey| {
            let workload = owners.get(&key.pod)?.clone()?;
            Some(SeriesKey {
                workload,
                extra: key.extra.clone(),
            })
        };

        let mut group_seen_at: BTreeMap<SeriesKey, SystemTime> = BTreeMap::new();
        for (key, at) in &seen_at {
            if let Some(group) = group_of(key) {
                let t = group_seen_at.entry(group).or_insert(*at);
                *t = (*t).min(*at);
            }
        }

        let mut samples = Vec::new();
        for plan in &self.metrics {
            let mut per = per_pod(&readings, signal(plan.measure), plan.aggregate);
            for (key, gpus) in &unknown {
                per.entry(key.clone()).or_insert(PodValue {
                    value: None,
                    gpus: *gpus,
                });
            }
            for (key, value) in per_group(&per, group_of, plan.aggregate) {
                let observed_at = group_seen_at.get(&key).copied();
                let labels = key.labels(&plan.labels, &self.extra_names);
                samples.push(Sample {
                    observed_at,
                    ..Sample::new(
                        plan.name.clone(),
                        Arc::new(labels),
                        value.map_err(|e| {
                            SeriesError::new(format!(
                                "{} of the workload's GPUs: {e}",
                                plan.measure
                            ))
                        }),
                    )
                });
            }
        }
        Ok(samples)
    }
}

/// The pods in a scrape with their GPU counts.
fn pods_of(readings: &[GpuReading]) -> Vec<(PodKey, usize)> {
    let mut pods: BTreeMap<PodKey, usize> = BTreeMap::new();
    for r in readings {
        if let Some(pod) = &r.pod {
            *pods
                .entry(PodKey {
                    pod: pod.clone(),
                    extra: r.extra.clone(),
                })
                .or_default() += 1;
        }
    }
    pods.into_iter().collect()
}
