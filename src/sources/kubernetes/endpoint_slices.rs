//! The ready endpoints of one Service, from a watch on its EndpointSlices
//! (`kubernetes.io/service-name=<service>`), so a dcgm-exporter DaemonSet that gains or loses a
//! node is followed without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::owners::spawn_consumer;

/// A Service's EndpointSlices, kept current by a watch.
pub struct ServiceEndpoints {
    namespace: String,
    service: String,
    slices: reflector::Store<EndpointSlice>,
    listed: Arc<AtomicBool>,
    /// Ends the watch when the source holding it is dropped (replaced by a config reload).
    _stop: tokio_util::sync::DropGuard,
}

impl ServiceEndpoints {
    /// Starts watching the slices of `namespace/service`; stops when `token` is cancelled or
    /// this is dropped.
    pub fn watch(
        client: kube::Client,
        namespace: &str,
        service: &str,
        token: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let (slices, writer) = reflector::store();
        let listed = Arc::new(AtomicBool::new(false));
        let selector = format!("kubernetes.io/service-name={service}");
        let token = token.child_token();
        let stream = watcher(api, watcher::Config::default().labels(&selector))
            .default_backoff()
            .reflect(writer);
        spawn_consumer(
            stream,
            format!("EndpointSlices of {namespace}/{service}"),
            listed.clone(),
            &token,
            tracker,
        );
        ServiceEndpoints {
            namespace: namespace.to_string(),
            service: service.to_string(),
            slices,
            listed,
            _stop: token.drop_guard(),
        }
    }

    /// Whether the first list has completed.
    pub fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }

    /// `namespace/service`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.service)
    }

    /// The URLs of the ready endpoints serving the port named `port`, sorted and without
    /// duplicates (an address can appear in two slices while they are being rebalanced).
    ///
    /// # Errors
    /// Before the first list has completed (the endpoints are not known yet).
    pub fn urls(&self, port: &str, scheme: &str, path: &str) -> Result<Vec<String>, String> {
        if !self.listed.load(Ordering::Acquire) {
            return Err(format!(
                "the EndpointSlices of {} have not been listed yet",
                self.describe()
            ));
        }
        let mut urls = Vec::new();
        for slice in self.slices.state() {
            urls.extend(slice_urls(&slice, port, scheme, path));
        }
        urls.sort();
        urls.dedup();
        Ok(urls)
    }
}

/// The URLs one slice contributes: each ready address at the named port's number.
pub fn slice_urls(slice: &EndpointSlice, port: &str, scheme: &str, path: &str) -> Vec<String> {
    let Some(number) = slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some(port))
        .and_then(|p| p.port)
    else {
        return Vec::new();
    };
    let ipv6 = slice.address_type == "IPv6";
    slice
        .endpoints
        .iter()
        // `ready` unset means ready (the API's own convention for consumers).
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter())
        .map(|address| {
            if ipv6 {
                format!("{scheme}://[{address}]:{number}{path}")
            } else {
                format!("{scheme}://{address}:{number}{path}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_addresses_on_the_named_port_become_urls() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "dcgm-abc", "namespace": "gpu"},
            "addressType": "IPv4",
            "ports": [{"name": "other", "port": 1}, {"name": "metrics", "port": 9400}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"]}
            ]
        }))
        .expect("slice");
        assert_eq!(
            slice_urls(&slice, "metrics", "http", "/metrics"),
            vec![
                "http://10.0.0.1:9400/metrics".to_string(),
                "http://10.0.0.3:9400/metrics".to_string()
            ]
        );
        assert!(slice_urls(&slice, "nope", "http", "/metrics").is_empty());
        let v6: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "v6"},
            "addressType": "IPv6",
            "ports": [{"name": "metrics", "port": 9400}],
            "endpoints": [{"addresses": ["fd00::1"]}]
        }))
        .expect("slice");
        assert_eq!(
            slice_urls(&v6, "metrics", "https", "/m"),
            vec!["https://[fd00::1]:9400/m".to_string()]
        );
    }
}
