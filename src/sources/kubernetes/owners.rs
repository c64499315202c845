//! Which workload a pod belongs to: Pod -> ReplicaSet -> Deployment, or the pod's StatefulSet,
//! Job, DaemonSet or other controller, from watch-backed caches of pod and ReplicaSet metadata.
//!
//! Only metadata is watched (`PartialObjectMetadata`), stripped to name, namespace and owner
//! references, so a cluster of many pods costs little memory and no full pod specs cross the
//! wire. A pod the cache does not know yet is reported as unresolved, never guessed: the next
//! poll resolves it.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt as _;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A workload: the controller that owns a set of pods.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// The namespace.
    pub namespace: String,
    /// `Deployment`, `StatefulSet`, `Job`, `DaemonSet`, ... or `Pod` for a bare pod.
    pub kind: String,
    /// The controller's name (the pod's own name for a bare pod).
    pub name: String,
}

/// Why a pod has no workload yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// The pod is not (yet) in the cache: just created, or already gone.
    UnknownPod,
    /// The pod's ReplicaSet is not (yet) in the cache.
    UnknownReplicaSet(String),
}

/// The pod and ReplicaSet caches, shared by every source that maps pods to workloads.
pub struct Owners {
    pods: reflector::Store<PartialObjectMeta<Pod>>,
    replicasets: reflector::Store<PartialObjectMeta<ReplicaSet>>,
    pods_listed: Arc<AtomicBool>,
    replicasets_listed: Arc<AtomicBool>,
}

impl Owners {
    /// Starts watching pods and ReplicaSets in every namespace; the watches retry with backoff
    /// and stop when `token` is cancelled.
    pub fn watch(client: kube::Client, token: &CancellationToken, tracker: &TaskTracker) -> Self {
        let (pods, pods_listed) = spawn_reflector::<Pod>(client.clone(), token, tracker);
        let (replicasets, replicasets_listed) =
            spawn_reflector::<ReplicaSet>(client, token, tracker);
        Owners {
            pods,
            replicasets,
            pods_listed,
            replicasets_listed,
        }
    }

    /// Whether both caches have completed their first list; before that every pod would look
    /// unknown, so sources wait instead of serving a partial picture.
    pub fn is_ready(&self) -> bool {
        self.pods_listed.load(Ordering::Acquire) && self.replicasets_listed.load(Ordering::Acquire)
    }

    /// The workload owning `namespace/pod`.
    ///
    /// # Errors
    /// [`Unresolved`] when the pod or its ReplicaSet is not in the cache.
    pub fn resolve(&self, namespace: &str, pod: &str) -> Result<Workload, Unresolved> {
        let meta = self
            .pods
            .get(&ObjectRef::new(pod).within(namespace))
            .ok_or(Unresolved::UnknownPod)?;
        self.resolve_meta(namespace, pod, &meta.metadata)
    }

    /// The workload owning a pod whose metadata the caller holds already (a source that
    /// watches its own pods): only its ReplicaSet is looked up, so a pod just created resolves
    /// as soon as the caller sees it.
    ///
    /// # Errors
    /// [`Unresolved::UnknownReplicaSet`] when the pod's ReplicaSet is not in the cache.
    pub fn resolve_meta(
        &self,
        namespace: &str,
        pod: &str,
        meta: &ObjectMeta,
    ) -> Result<Workload, Unresolved> {
        let workload = |kind: &str, name: &str| Workload {
            namespace: namespace.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
        };
        let Some(owner) = controller(meta) else {
            return Ok(workload("Pod", pod));
        };
        if owner.kind == "ReplicaSet" && owner.api_version.starts_with("apps/") {
            let rs = self
                .replicasets
                .get(&ObjectRef::new(&owner.name).within(namespace))
                .ok_or_else(|| Unresolved::UnknownReplicaSet(owner.name.clone()))?;
            return Ok(match controller(&rs.metadata) {
                Some(top) => workload(&top.kind, &top.name),
                None => workload("ReplicaSet", &owner.name),
            });
        }
        Ok(workload(&owner.kind, &owner.name))
    }
}

/// The managing controller among an object's owners (`controller: true`).
fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// Spawns a metadata-only reflector for `K`, returning its store and a flag set once the first
/// list has been applied.
fn spawn_reflector<K>(
    client: kube::Client,
    token: &CancellationToken,
    tracker: &TaskTracker,
) -> (reflector::Store<PartialObjectMeta<K>>, Arc<AtomicBool>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api: Api<PartialObjectMeta<K>> = Api::all(client);
    let (store, writer) = reflector::store();
    let listed = Arc::new(AtomicBool::new(false));
    let kind = K::kind(&());
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|obj: &mut PartialObjectMeta<K>| {
            // Keep what resolution needs; the rest of the metadata is memory for nothing.
            obj.metadata.managed_fields = None;
            obj.metadata.annotations = None;
            obj.metadata.labels = None;
        })
        .reflect(writer);
    spawn_consumer(stream, kind.to_string(), listed.clone(), token, tracker);
    (store, listed)
}

/// Drives a reflector stream until cancelled, logging watch errors (the stream retries itself)
/// and raising `listed` after the first complete list.
pub(crate) fn spawn_consumer<K, S>(
    stream: S,
    what: String,
    listed: Arc<AtomicBool>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) where
    K: Send + 'static,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let token = token.clone();
    tracker.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        loop {
            let next = tokio::select! {
                () = token.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                None => return,
                Some(Ok(watcher::Event::InitDone)) => {
                    if !listed.swap(true, Ordering::AcqRel) {
                        tracing::info!(what = %what, "Kubernetes cache listed");
                    }
                    failing = false;
                }
                Some(Ok(_)) => failing = false,
                Some(Err(e)) => {
                    // The backoff spaces retries out; log the first failure of a run loudly.
                    if failing {
                        tracing::debug!(what = %what, error = %e, "Kubernetes watch still failing");
                    } else {
                        tracing::warn!(what = %what, error = %e, "Kubernetes watch failed; retrying with backoff");
                    }
                    failing = true;
                }
            }
        }
    });
}
