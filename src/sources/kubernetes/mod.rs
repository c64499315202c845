//! Kubernetes watches that sources share to map what they scrape to workloads: the pod ->
//! owner cache (Deployment, StatefulSet, ...) and the EndpointSlices of a Service; and the
//! ready replicas of the workload that runs a queue's jobs (`replicas`, for `workers_needed`). Started by
//! [`super::build::BuildContext`] for the first source that needs them; the wire formats and the
//! client itself are [`crate::apimachinery`]'s.

pub mod endpoint_slices;
pub mod owners;
pub mod pods;
pub mod replicas;
pub mod workloads;
