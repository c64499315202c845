//! Kubernetes API machinery conventions the API surfaces keep, as `k8s.io/apimachinery`
//! defines them: quantity strings, label keys and values (and encoding a value that is not
//! one), label selectors, and `metav1.Status` bodies. Pure functions, no client: the client is
//! [`crate::kube_client`], and the watches sources read (pod owners, EndpointSlices) are
//! [`crate::sources::kubernetes`]'s.

pub mod label;
pub mod quantity;
pub mod selector;
pub mod status;
