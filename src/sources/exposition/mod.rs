//! What the kinds that read Prometheus-format endpoints share (`dcgm`, `inference`): the
//! lenient text parser ([`parse`]), the bounded HTTP read ([`fetch`]) and a client of
//! Prometheus's HTTP API for instant queries ([`prometheus_api`]), for sources that ask a
//! Prometheus instead of scraping.
//! None of it knows what the samples mean.

pub mod fetch;
pub mod parse;
pub mod prometheus_api;
pub mod scrape_settings;
