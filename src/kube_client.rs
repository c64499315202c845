//! A Kubernetes API client from the `kubernetes:` block: a kubeconfig when one is named, else
//! the in-cluster service account, else `$KUBECONFIG` / `~/.kube/config` (kube's inference).

use std::path::PathBuf;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

/// The `kubernetes:` block: only needed to run outside a cluster with a specific kubeconfig.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file to use instead of the in-cluster service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context. Default: its current context.
    #[serde(default)]
    pub context: Option<String>,
}

/// Builds the client. Does not contact the API server: the watches that use it do, and retry.
///
/// # Errors
/// When the kubeconfig cannot be read or names an unknown context, or when no configuration can
/// be found at all (not in a cluster and no kubeconfig).
pub async fn client(config: &KubernetesConfig) -> anyhow::Result<kube::Client> {
    crate::tls::ensure_crypto_provider();
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("kubernetes.kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("kubernetes.kubeconfig {}", path.display()))?
        }
        None if config.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .context("kubernetes.context: reading the default kubeconfig")?,
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration: not running in a cluster, and no kubeconfig \
             (set kubernetes.kubeconfig, $KUBECONFIG or ~/.kube/config)",
        )?,
    };
    kube::Client::try_from(kube_config).context("building the Kubernetes client")
}
