//! Kubernetes wire details that are not specific to one API surface: quantity strings, label
//! selectors and `metav1.Status` bodies. Pure functions; no I/O.

pub mod quantity;
pub mod selector;
pub mod status;
