//! The pods a source scrapes directly: those of one namespace (or all) matching a label
//! selector, from a watch, so replicas that come and go are followed without a restart.
//!
//! Only ready pods are targets (condition `Ready=True`, a pod IP, not terminating): a pod that
//! is starting or draining serves no traffic, so its queue is not the workload's. The cache
//! keeps of each pod only what a target needs (labels, owners, IP, readiness, container ports);
//! the rest of the spec and status is dropped as it arrives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::owners::spawn_consumer;
use super::workloads::PodRef;

/// A container port, by number or by the name a container gives it (`ports[].name`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PodPort {
    /// `8000`.
    Number(u16),
    /// `http`: looked up in each pod's containers, so pods of different versions may differ.
    Name(String),
}

impl std::fmt::Display for PodPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PodPort::Number(n) => write!(f, "{n}"),
            PodPort::Name(name) => write!(f, "{name:?}"),
        }
    }
}

/// One ready pod to scrape.
#[derive(Debug, Clone)]
pub struct PodTarget {
    /// The pod.
    pub pod: PodRef,
    /// Its metadata as watched (owners, labels), for owner resolution.
    pub meta: ObjectMeta,
    /// The URL to scrape, or why the pod has none (no container port of that name).
    pub url: Result<String, String>,
}

/// The selected pods, kept current by a watch.
pub struct SelectedPods {
    namespace: Option<String>,
    selector: String,
    pods: reflector::Store<Pod>,
    listed: Arc<AtomicBool>,
    /// Ends the watch when the source holding it is dropped (replaced by a config reload).
    _stop: tokio_util::sync::DropGuard,
}

impl SelectedPods {
    /// Starts watching the pods of `namespace` (every namespace when `None`) that match the
    /// label `selector` (the API server filters); stops when `token` is cancelled or this is
    /// dropped.
    pub fn watch(
        client: kube::Client,
        namespace: Option<&str>,
        selector: &str,
        token: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let api: Api<Pod> = match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let (pods, writer) = reflector::store();
        let listed = Arc::new(AtomicBool::new(false));
        let stream = watcher(api, watcher::Config::default().labels(selector))
            .default_backoff()
            .modify(slim)
            .reflect(writer);
        let token = token.child_token();
        spawn_consumer(
            stream,
            format!("pods {}", describe(namespace, selector)),
            listed.clone(),
            &token,
            tracker,
        );
        SelectedPods {
            namespace: namespace.map(str::to_string),
            selector: selector.to_string(),
            pods,
            listed,
            _stop: token.drop_guard(),
        }
    }

    /// Whether the first list has completed.
    pub fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }

    /// Where and what, for messages.
    pub fn describe(&self) -> String {
        describe(self.namespace.as_deref(), &self.selector)
    }

    /// The ready pods with their URLs, sorted by namespace and name.
    ///
    /// # Errors
    /// Before the first list has completed (the pods are not known yet).
    pub fn targets(
        &self,
        port: &PodPort,
        scheme: &str,
        path: &str,
    ) -> Result<Vec<PodTarget>, String> {
        if !self.is_listed() {
            return Err(format!(
                "the pods {} have not been listed yet",
                self.describe()
            ));
        }
        let mut out: BTreeMap<PodRef, PodTarget> = BTreeMap::new();
        for pod in self.pods.state() {
            if let Some(t) = target(&pod, port, scheme, path) {
                out.insert(t.pod.clone(), t);
            }
        }
        Ok(out.into_values().collect())
    }
}

fn describe(namespace: Option<&str>, selector: &str) -> String {
    format!(
        "{} matching {selector:?}",
        namespace.map_or("in every namespace".to_string(), |n| format!("in {n}")),
    )
}

/// The target a pod is, if it is ready.
pub fn target(pod: &Pod, port: &PodPort, scheme: &str, path: &str) -> Option<PodTarget> {
    let meta = &pod.metadata;
    if meta.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    if !ready {
        return None;
    }
    let number = match port {
        PodPort::Number(n) => Ok(*n),
        PodPort::Name(name) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.as_deref().unwrap_or_default())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("the pod has no container port named {name:?}")),
    };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    Some(PodTarget {
        pod: PodRef {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        },
        meta: meta.clone(),
        url: number.map(|n| format!("{scheme}://{host}:{n}{path}")),
    })
}

/// Keeps what a target needs: owners and labels, the pod IP, the Ready condition and the
/// containers' ports.
fn slim(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            containers: spec
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports,
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            pod_ip: status.pod_ip,
            conditions: status.conditions.map(|c| {
                c.into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| PodCondition {
                        type_: c.type_,
                        status: c.status,
                        ..PodCondition::default()
                    })
                    .collect()
            }),
            ..PodStatus::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready: &str, ip: Option<&str>, deleting: bool) -> Pod {
        let mut json = serde_json::json!({
            "metadata": {"name": "vllm-0", "namespace": "ml"},
            "spec": {"containers": [
                {"name": "sidecar", "image": "x", "ports": [{"name": "admin", "containerPort": 9000}]},
                {"name": "vllm", "image": "vllm/vllm-openai", "env": [{"name": "A", "value": "b"}],
                 "ports": [{"name": "http", "containerPort": 8000}]}
            ]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": ready}]}
        });
        if deleting {
            json["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z".into();
        }
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_targets_and_ports_resolve_by_name_or_number() {
        let name = PodPort::Name("http".into());
        let t = target(
            &pod("True", Some("10.1.2.3"), false),
            &name,
            "http",
            "/metrics",
        )
        .expect("ready");
        assert_eq!(t.url.as_deref(), Ok("http://10.1.2.3:8000/metrics"));
        assert_eq!(
            target(
                &pod("True", Some("10.1.2.3"), false),
                &PodPort::Number(8080),
                "https",
                "/m"
            )
            .and_then(|t| t.url.ok())
            .as_deref(),
            Some("https://10.1.2.3:8080/m")
        );
        assert_eq!(
            target(
                &pod("True", Some("fd00::5"), false),
                &name,
                "http",
                "/metrics"
            )
            .and_then(|t| t.url.ok())
            .as_deref(),
            Some("http://[fd00::5]:8000/metrics")
        );
        let missing = target(
            &pod("True", Some("10.1.2.3"), false),
            &PodPort::Name("grpc".into()),
            "http",
            "/metrics",
        )
        .expect("ready");
        assert!(
            missing.url.is_err(),
            "a ready pod without the port is a member with an error"
        );
        assert!(target(&pod("False", Some("10.1.2.3"), false), &name, "http", "/").is_none());
        assert!(target(&pod("True", None, false), &name, "http", "/").is_none());
        assert!(target(&pod("True", Some("10.1.2.3"), true), &name, "http", "/").is_none());
    }

    #[test]
    fn the_cache_keeps_only_what_a_target_needs() {
        let mut p = pod("True", Some("10.1.2.3"), false);
        slim(&mut p);
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.containers[1].image, None);
        assert_eq!(spec.containers[1].env, None);
        assert_eq!(spec.containers[1].ports.as_ref().map(Vec::len), Some(1));
        let status = p.status.as_ref().expect("status");
        assert_eq!(status.phase, None);
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(1));
        assert!(target(&p, &PodPort::Name("http".into()), "http", "/metrics").is_some());
    }
}
