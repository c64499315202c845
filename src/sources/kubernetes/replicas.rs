//! The ready replicas of the workload that runs a queue's jobs (`metrics[].workers`), for
//! `workers_needed`: one `GET` of the Deployment or StatefulSet per poll, bounded by its own
//! share of the poll's time limit. Ready replicas are the ones doing work: a pod still starting has finished
//! nothing, and counting it would lower the measured throughput per replica.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Api;
use serde::Deserialize;

use crate::primitives::ConfigError;
use crate::sources::workers::{self, Workload};

/// Whether `name` is a DNS subdomain, as Kubernetes object names are: lowercase letters,
/// digits, `-` and `.`, starting and ending alphanumeric, at most 253 characters.
fn is_object_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

/// The workload whose replicas run a queue's jobs (`metrics[].workers`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// A Deployment's name, **or**
    #[serde(default)]
    pub deployment: Option<String>,
    /// a StatefulSet's name.
    #[serde(default)]
    pub statefulset: Option<String>,
    /// Its namespace.
    pub namespace: String,
}

impl WorkersConfig {
    /// Checks the block (`at` names it).
    ///
    /// # Errors
    /// Not exactly one of `deployment` and `statefulset`, or a name that is no Kubernetes name.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let name = match (&self.deployment, &self.statefulset) {
            (Some(n), None) | (None, Some(n)) => n,
            _ => {
                return Err(ConfigError::invalid(
                    at,
                    "give exactly one of deployment or statefulset (the workload whose ready replicas run the jobs)",
                ));
            }
        };
        for (field, value) in [("name", name), ("namespace", &self.namespace)] {
            if !is_object_name(value) {
                return Err(ConfigError::invalid(
                    format!("{at}.{field}"),
                    format!("{value:?} is not a Kubernetes object name"),
                ));
            }
        }
        Ok(())
    }

    /// `deployment ml/embed-worker`, for messages.
    pub fn describe(&self) -> String {
        match (&self.deployment, &self.statefulset) {
            (Some(d), _) => format!("deployment {}/{d}", self.namespace),
            (None, Some(s)) => format!("statefulset {}/{s}", self.namespace),
            (None, None) => format!("no workload in {}", self.namespace),
        }
    }
}

/// Reads workloads' ready replicas through the Kubernetes API, each read bounded by its own
/// time limit: an API server that hangs fails the `workers_needed` series, not the queue's
/// other metrics polled with it.
#[derive(Clone)]
pub struct ReplicaReader {
    client: kube::Client,
    timeout: Duration,
}

impl ReplicaReader {
    /// A reader over `client`, each read given at most `timeout`.
    pub fn new(client: kube::Client, timeout: Duration) -> Self {
        ReplicaReader { client, timeout }
    }

    /// Reads the ready replicas of each of `workloads`' workload, one after the other, and
    /// records each reading (or why it failed) at the adapter's clock.
    pub async fn read_into<'a>(&self, workloads: impl IntoIterator<Item = &'a mut Workload>) {
        for w in workloads {
            let ready = self.ready(&w.config).await;
            w.replicas_read(workers::unix_now(), ready);
        }
    }

    /// The ready replicas of `w` now (`status.readyReplicas`; absent is 0, as the API omits
    /// zero fields).
    ///
    /// # Errors
    /// The workload does not exist, or the API cannot be read.
    pub async fn ready(&self, w: &WorkersConfig) -> Result<u32, String> {
        tokio::time::timeout(self.timeout, self.read(w))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "reading {} took longer than {:?}",
                    w.describe(),
                    self.timeout
                ))
            })
    }

    async fn read(&self, w: &WorkersConfig) -> Result<u32, String> {
        let ns = w.namespace.as_str();
        let ready = match (&w.deployment, &w.statefulset) {
            (Some(name), _) => Api::<Deployment>::namespaced(self.client.clone(), ns)
                .get(name)
                .await
                .map(|d| d.status.and_then(|s| s.ready_replicas)),
            (None, Some(name)) => Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                .get(name)
                .await
                .map(|s| s.status.and_then(|s| s.ready_replicas)),
            (None, None) => return Err(w.describe()),
        };
        match ready {
            Ok(n) => Ok(n.unwrap_or(0).max(0) as u32),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                Err(format!("{} does not exist", w.describe()))
            }
            Err(e) => Err(format!("reading {}: {e}", w.describe())),
        }
    }
}
