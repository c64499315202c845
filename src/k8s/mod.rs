//! Kubernetes: wire details shared by the API surfaces (quantity strings, label rules and selectors,
//! `metav1.Status` bodies: pure functions), and the client made from the `kubernetes:` block.
//! The watch-backed caches sources read (pod owners, EndpointSlices) are
//! [`crate::sources::kubernetes`]'s.

pub mod client;
pub mod label;
pub mod quantity;
pub mod selector;
pub mod status;
