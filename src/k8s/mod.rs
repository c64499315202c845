//! Kubernetes: wire details shared by the API surfaces (quantity strings, label selectors,
//! `metav1.Status` bodies: pure functions), and the few things the adapter reads from the
//! Kubernetes API itself (a client from the config, the pod owner cache, EndpointSlice
//! discovery), each a watch-backed cache that sources read without a round trip.

pub mod client;
pub mod endpoint_slices;
pub mod owners;
pub mod quantity;
pub mod selector;
pub mod status;
