//! The label selectors of recent metric requests, parsed once.
//!
//! An HPA asks for the same metric with the same selector every sync period, and a busy
//! cluster's few hundred HPAs ask with a few hundred selectors. Decoding the query string and
//! parsing its `labelSelector` on every request was a measurable share of the metric GET's work
//! (BENCHMARKS.md); a lookup by the raw query string is a hash of a few dozen bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::request::query_param;
use crate::apimachinery::selector::{Selector, SelectorError};

/// How many distinct query strings are kept. Beyond it the cache starts over, so a client
/// sending endless different selectors costs a parse each, not memory.
pub const CAPACITY: usize = 512;

/// The longest query string kept. A longer one (the listener allows 16 KiB) is parsed every
/// time, so the cache holds at most `CAPACITY` × 1 KiB of keys however the URIs are written.
pub const MAX_KEPT_QUERY_BYTES: usize = 1024;

/// Parsed selectors by the query string they came from. Only selectors that parse, from query
/// strings of at most [`MAX_KEPT_QUERY_BYTES`], are kept: a bad one is parsed, and refused,
/// every time.
pub struct SelectorCache {
    parsed: Mutex<HashMap<Box<str>, Arc<Selector>>>,
    everything: Arc<Selector>,
}

impl Default for SelectorCache {
    fn default() -> Self {
        SelectorCache {
            parsed: Mutex::new(HashMap::new()),
            everything: Arc::new(Selector::everything()),
        }
    }
}

impl SelectorCache {
    /// The selector of a request with `query`: its last `labelSelector` parameter, decoded and
    /// parsed, or everything when it has none.
    ///
    /// # Errors
    /// The parse error of a selector that is not valid Kubernetes syntax.
    pub fn selector(&self, query: Option<&str>) -> Result<Arc<Selector>, SelectorError> {
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(self.everything.clone());
        };
        if let Some(found) = self.lock().get(query) {
            return Ok(found.clone());
        }
        let parsed = match query_param(Some(query), "labelSelector") {
            None => self.everything.clone(),
            Some(raw) => Arc::new(Selector::parse(&raw)?),
        };
        if query.len() > MAX_KEPT_QUERY_BYTES {
            return Ok(parsed);
        }
        let mut parsed_by_query = self.lock();
        if parsed_by_query.len() >= CAPACITY {
            parsed_by_query.clear();
        }
        parsed_by_query.insert(query.into(), parsed.clone());
        Ok(parsed)
    }

    /// How many query strings are kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Selector>>> {
        // The map is valid after any panic of a holder: every change is one call on it.
        self.parsed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_iter(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn a_cached_selector_is_the_one_a_fresh_parse_gives() {
        let cache = SelectorCache::default();
        let a = labels(&[("queue", "embed"), ("tier", "gpu")]);
        let b = labels(&[("queue", "other")]);
        for query in [
            "labelSelector=queue%3Dembed",
            "labelSelector=queue+in+%28embed%2Cx%29,tier!%3Dcpu",
            "limit=5&labelSelector=queue%3Dother&labelSelector=queue%3Dembed",
            "labelSelector=",
            "limit=5",
        ] {
            let fresh = match query_param(Some(query), "labelSelector") {
                None => Selector::everything(),
                Some(raw) => Selector::parse(&raw).expect("parses"),
            };
            let first = cache.selector(Some(query)).expect("parses");
            let second = cache.selector(Some(query)).expect("parses");
            assert!(Arc::ptr_eq(&first, &second), "{query}: kept");
            for l in [&a, &b] {
                assert_eq!(first.matches(l), fresh.matches(l), "{query}");
            }
        }
        assert_eq!(cache.len(), 5);
        let all = cache.selector(None).expect("everything");
        assert!(all.matches(&a) && all.matches(&b));
        assert_eq!(cache.len(), 5, "no query, nothing kept");
    }

    #[test]
    fn a_bad_selector_is_refused_every_time_and_not_kept() {
        let cache = SelectorCache::default();
        for _ in 0..2 {
            let e = cache
                .selector(Some("labelSelector=queue+in+%28"))
                .expect_err("unbalanced");
            assert!(e.to_string().contains("queue in ("), "{e}");
        }
        assert!(cache.is_empty());
    }

    #[test]
    fn a_long_query_string_is_parsed_but_not_kept() {
        let cache = SelectorCache::default();
        let padding = "x".repeat(MAX_KEPT_QUERY_BYTES);
        let query = format!("pad={padding}&labelSelector=queue%3Dq1");
        let one = cache.selector(Some(&query)).expect("parses");
        assert!(one.matches(&labels(&[("queue", "q1")])));
        assert!(!one.matches(&labels(&[("queue", "q2")])));
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = SelectorCache::default();
        for i in 0..(CAPACITY * 3 + 7) {
            cache
                .selector(Some(&format!("labelSelector=queue%3Dq{i}")))
                .expect("parses");
            assert!(cache.len() <= CAPACITY);
        }
        let one = cache
            .selector(Some("labelSelector=queue%3Dq1"))
            .expect("parses");
        assert!(one.matches(&labels(&[("queue", "q1")])));
        assert!(!one.matches(&labels(&[("queue", "q2")])));
    }
}
