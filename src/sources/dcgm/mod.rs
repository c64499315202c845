//! NVIDIA dcgm-exporter: GPU utilization per workload, for GPU inference HPAs.
//!
//! This module holds the pure parts so far: the lenient exposition reader ([`parse`]), per-GPU
//! readings with pod attribution and the metric alias table ([`gpus`]), per-pod then per-workload
//! aggregation ([`aggregate`]), and concurrent scraping of a static list of endpoints ([`scrape`]).
//! Resolving pods to their owning workloads through the Kubernetes API, endpoint discovery from
//! EndpointSlices and the `dcgm` source in the configuration build on them.

pub mod aggregate;
pub mod gpus;
pub mod parse;
pub mod scrape;
pub mod synthetic;
