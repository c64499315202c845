//! How the kinds that scrape Prometheus-format endpoints (`dcgm`, `inference`) scrape:
//! `scrape_timeout`, `extra_labels`, `ca_file`, `max_response_bytes`, written flat in their
//! source blocks and read into one [`ScrapeSettings`] by [`crate::sources::field_group`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::MapAccess;

use super::fetch::{Fetch, validate_limits};
use crate::primitives::{ConfigError, HumanDuration};
use crate::sources::field_group::FieldGroup;
use crate::sources::kubernetes::workloads::validate_extra_labels;

/// The share of the poll timeout one endpoint's scrape gets by default: one slow endpoint
/// fails alone instead of taking the whole poll with it.
const DEFAULT_SCRAPE_SHARE: f64 = 0.8;

/// A scraping source's settings for each endpoint it reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeSettings {
    /// Time allowed to each endpoint's scrape. Default: 80 % of the poll timeout.
    pub scrape_timeout: Option<HumanDuration>,
    /// Extra series labels copied from the scraped samples' labels (`model: model_name`).
    pub extra_labels: BTreeMap<String, String>,
    /// PEM CA for `https` endpoints (or a Prometheus) behind a private CA.
    pub ca_file: Option<PathBuf>,
    /// Largest answer read from one endpoint or from Prometheus, in bytes. Default 32 MiB.
    pub max_response_bytes: Option<usize>,
}

impl FieldGroup for ScrapeSettings {
    const FIELDS: &'static [&'static str] = &[
        "scrape_timeout",
        "extra_labels",
        "ca_file",
        "max_response_bytes",
    ];

    fn read_value<'de, A: MapAccess<'de>>(
        &mut self,
        field: &'static str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match field {
            "scrape_timeout" => self.scrape_timeout = map.next_value()?,
            "extra_labels" => self.extra_labels = map.next_value()?,
            "ca_file" => self.ca_file = map.next_value()?,
            "max_response_bytes" => self.max_response_bytes = map.next_value()?,
            other => unreachable!("{other} is not one of ScrapeSettings::FIELDS"),
        }
        Ok(())
    }
}

impl ScrapeSettings {
    /// The per-endpoint scrape timeout, given the source's poll timeout.
    pub fn scrape_timeout(&self, poll_timeout: Duration) -> Duration {
        self.scrape_timeout
            .map_or(poll_timeout.mul_f64(DEFAULT_SCRAPE_SHARE), |d| d.0)
    }

    /// How one scrape is bounded, given the source's poll timeout.
    pub fn fetch(&self, poll_timeout: Duration) -> Fetch {
        Fetch {
            timeout: self.scrape_timeout(poll_timeout),
            max_bytes: self
                .max_response_bytes
                .unwrap_or(crate::sources::http::DEFAULT_MAX_RESPONSE_BYTES),
        }
    }

    /// The extra labels as (series label, scraped label) pairs, in a stable order.
    pub fn extra_labels(&self) -> (Vec<String>, Vec<String>) {
        self.extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .unzip()
    }

    /// Checks the settings of the source block at `at`; `example` is a scraped label the
    /// kind's users copy, for the message of an empty one.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(
        &self,
        at: &str,
        poll_timeout: Duration,
        example: &str,
    ) -> Result<(), ConfigError> {
        validate_limits(
            at,
            self.scrape_timeout(poll_timeout),
            poll_timeout,
            self.max_response_bytes,
        )?;
        validate_extra_labels(at, &self.extra_labels, example)
    }
}
