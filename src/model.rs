//! The vocabulary shared by sources, the store and the API surfaces.
//!
//! Sources produce [`Sample`]s, the store keeps them, the API reads them. None of those modules
//! depends on another; they all depend on this one. Nothing here does I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::apimachinery::label::encode_value;

/// Labels of one series: what `metricLabels` shows and what a `labelSelector` matches.
///
/// Every value is a valid Kubernetes label value, whatever it was made from: a value read from
/// data (a Redis key such as `queue:emb`, a RabbitMQ queue or vhost, an exporter's label, a
/// workload name longer than 63 characters) is encoded by [`encode_value`] as the set is built,
/// so any one series can be picked out by a selector made of its own labels. The encoding is
/// here, in the one type every source builds its series with, rather than at each place a
/// source reads a name: a new source cannot forget it, and a value that is already valid (every
/// configured `labels:` value, which config load checks, and most names) costs a check and no
/// copy. The raw value of each encoded pair is kept beside it ([`Labels::raw_iter`]) for where
/// a person looks: the `check` table, messages and `/metrics`. Names are never encoded: every
/// name is a constant or comes from the config, which checks it ([`crate::apimachinery::label::validate_key`]).
///
/// Pairs sorted by name, so that the JSON output and the `/metrics` output are in a stable
/// order. A series' labels are a few pairs set once, and with 20,000 series they are much of the
/// heap, so a set is two allocations whatever its size: every name and value back to back in
/// one string, and where each ends (a `BTreeMap` each was a 544-byte node for even one pair; a
/// slice of boxed strings, an allocation per name and per value).
/// Comparison, ordering and hashing are those of the sorted pairs, as a map's are.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels {
    /// Name, value, name, value, ... in name order; then the raw value of each pair whose value
    /// was encoded, in pair order.
    text: Box<str>,
    /// Where each name and each value ends in `text`: two per pair; then, per encoded pair, its
    /// index and where its raw value ends.
    ends: Box<[usize]>,
    /// How many pairs.
    pairs: usize,
}

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Labels::default()
    }

    /// The value of label `name`, if set (as served: valid, encoded if it had to be).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).ok().map(|i| self.pair(i).1)
    }

    /// Whether label `name` is set.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets label `name` to `value` (raw: encoded if it is not a valid label value) and returns
    /// what it was, raw (a map's `insert`). Rebuilds the set: labels are built once per series,
    /// not changed in a hot path.
    pub fn insert(&mut self, name: String, value: String) -> Option<String> {
        let mut pairs: Vec<(&str, &str)> = self.raw_iter().collect();
        let old = match pairs.binary_search_by(|(k, _)| (*k).cmp(name.as_str())) {
            Ok(i) => Some(std::mem::replace(&mut pairs[i].1, value.as_str()).to_string()),
            Err(i) => {
                pairs.insert(i, (name.as_str(), value.as_str()));
                None
            }
        };
        *self = Labels::from_sorted(&pairs);
        old
    }

    /// The pairs in name order, as served.
    pub fn iter(&self) -> LabelsIter<'_> {
        self.into_iter()
    }

    /// The pairs in name order with each value as it was given, before [`encode_value`]: what a
    /// person recognises (the `check` table, messages, `/metrics`), never what a selector matches.
    pub fn raw_iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.len()).map(|i| (self.pair(i).0, self.raw_value(i)))
    }

    /// The label names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// How many labels are set.
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// Whether no label is set.
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// Pair `i` in name order, as served.
    fn pair(&self, i: usize) -> (&str, &str) {
        let start = match i {
            0 => 0,
            _ => self.ends[2 * i - 1],
        };
        let mid = self.ends[2 * i];
        (
            &self.text[start..mid],
            &self.text[mid..self.ends[2 * i + 1]],
        )
    }

    /// Pair `i`'s value as given: its raw value if it was encoded, else the served one.
    fn raw_value(&self, i: usize) -> &str {
        let mut start = match self.pairs {
            0 => 0,
            n => self.ends[2 * n - 1],
        };
        for raw in self.ends[2 * self.pairs..].chunks_exact(2) {
            if raw[0] == i {
                return &self.text[start..raw[1]];
            }
            start = raw[1];
        }
        self.pair(i).1
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.pair(mid).0.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The set of `pairs` (raw values), which are sorted by name with no name twice.
    fn from_sorted(pairs: &[(&str, &str)]) -> Self {
        let served: Vec<Cow<'_, str>> = pairs.iter().map(|(_, v)| encode_value(v)).collect();
        let encoded = || {
            pairs
                .iter()
                .zip(&served)
                .enumerate()
                .filter(|(_, (_, value))| matches!(value, Cow::Owned(_)))
                .map(|(i, ((_, raw), _))| (i, *raw))
        };
        let size = pairs
            .iter()
            .zip(&served)
            .map(|((k, _), v)| k.len() + v.len())
            .sum::<usize>()
            + encoded().map(|(_, raw)| raw.len()).sum::<usize>();
        let mut text = String::with_capacity(size);
        let mut ends = Vec::with_capacity(2 * pairs.len() + 2 * encoded().count());
        for ((k, _), v) in pairs.iter().zip(&served) {
            text.push_str(k);
            ends.push(text.len());
            text.push_str(v);
            ends.push(text.len());
        }
        for (i, raw) in encoded() {
            text.push_str(raw);
            ends.extend([i, text.len()]);
        }
        Labels {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            pairs: pairs.len(),
        }
    }
}

impl Ord for Labels {
    /// As served; two sets served alike (only if two raw values' hashes met) by their raw values.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.iter()
            .cmp(other.iter())
            .then_with(|| self.raw_iter().cmp(other.raw_iter()))
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    /// Pairs in any order; a name given twice keeps its last value, as a map's `collect` does.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let map: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Labels::from(&map)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Labels::from(&map)
    }
}

impl From<&BTreeMap<String, String>> for Labels {
    fn from(map: &BTreeMap<String, String>) -> Self {
        let pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Labels::from_sorted(&pairs)
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Labels {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

/// The pairs of a [`Labels`], in name order.
#[derive(Clone)]
pub struct LabelsIter<'a> {
    labels: &'a Labels,
    next: usize,
}

impl<'a> Iterator for LabelsIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        (self.next < self.labels.len()).then(|| {
            self.next += 1;
            self.labels.pair(self.next - 1)
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.labels.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for LabelsIter<'_> {}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a str, &'a str);
    type IntoIter = LabelsIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        LabelsIter {
            labels: self,
            next: 0,
        }
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl serde::Serialize for Labels {
    /// A JSON object in name order, as `metricLabels` is.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// Labels shared between a source's plan, the store and responses: a series' labels only change
/// when its keys do, so polls and reads pass a pointer instead of copying maps.
pub type SharedLabels = Arc<Labels>;

/// One reading of one series, as a source produced it in one poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The configured metric this series belongs to.
    pub metric: Arc<str>,
    /// The series' labels (configured labels plus what the source adds, such as `key`).
    pub labels: SharedLabels,
    /// The value, or why this one series could not be read. An error is never turned into `0`.
    pub value: Result<f64, SeriesError>,
    /// When the backend itself observed the value, where it says so (a Prometheus sample's
    /// timestamp); `None` means "now", the end of the poll. The store keeps the earlier of the
    /// two, so a value the backend last saw minutes ago ages out under `max_staleness` instead
    /// of passing as fresh.
    pub observed_at: Option<SystemTime>,
    /// The thing this series reads has not existed at any poll since the source started (an
    /// exact Redis key): its `0` is honest, because Redis deletes an empty list, but a key that
    /// never appears is as likely a typo. `check` marks such series and `/metrics` counts them.
    pub unseen: bool,
}

impl Sample {
    /// A sample observed at the end of the poll, of a thing that exists.
    pub fn new(metric: Arc<str>, labels: SharedLabels, value: Result<f64, SeriesError>) -> Self {
        Sample {
            metric,
            labels,
            value,
            observed_at: None,
            unseen: false,
        }
    }
}

/// Why one series has no value in a poll whose connection otherwise worked
/// (a key of the wrong type, an unparsable timestamp, a missing consumer group, ...).
///
/// The message names the thing that is wrong, because it is what the HPA's event and the
/// `check` table will show to the person who has to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesError(pub String);

impl SeriesError {
    /// Builds an error from anything printable.
    pub fn new(message: impl Into<String>) -> Self {
        SeriesError(message.into())
    }
}

/// The error a non-finite computed value is served as: never a value.
pub fn non_finite(v: f64) -> SeriesError {
    SeriesError::new(format!("the computed value {v} is not a finite number"))
}

impl fmt::Display for SeriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SeriesError {}

/// A value as the API surfaces serve it: one matched series with the time it was observed.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    /// The metric's configured name.
    pub metric: String,
    /// The series' labels.
    pub labels: SharedLabels,
    /// The value. Always finite.
    pub value: f64,
    /// When the poll that produced the value completed (the adapter's clock), so a reader can see
    /// how old it is; never the time of serving.
    pub observed_at: SystemTime,
}

/// Checks a metric name: lowercase letters, digits, `_`, `.` and `-`, starting and ending with a
/// letter or digit, at most 253 characters.
///
/// client-go lowercases the metric name in the URL path (docs/reference/external-metrics-api.md §1.1), so a name
/// with capitals could never be requested; `.` and `..` are not valid path segments.
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn validate_metric_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "is {} characters long; the limit is 253",
            name.len()
        ));
    }
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-');
    if let Some(bad) = name.chars().find(|c| !ok_char(*c)) {
        return Err(format!(
            "contains {bad:?}; use lowercase letters, digits, '_', '.' and '-' (the HPA lowercases metric names)"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("must start and end with a lowercase letter or digit".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_behave_as_the_sorted_map_they_replace() {
        let pairs = [
            ("queue", "b"),
            ("app", "x"),
            ("queue", "a"),
            ("vhost", "v1"),
        ];
        let labels: Labels = pairs.into_iter().collect();
        let map: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The last of a repeated name wins; the pairs come out in name order.
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            map.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>()
        );
        assert_eq!(Labels::from(&map), labels);
        assert_eq!(labels.get("queue"), Some("a"));
        assert_eq!(labels.get("nope"), None);
        assert!(labels.contains_key("vhost") && !labels.contains_key("vhos"));
        assert_eq!(labels.len(), 3);
        assert_eq!(format!("{labels:?}"), format!("{map:?}"));
        assert_eq!(
            serde_json::to_string(&labels).unwrap(),
            serde_json::to_string(&map).unwrap()
        );

        let mut grown = Labels::new();
        assert!(grown.is_empty());
        assert_eq!(grown.insert("queue".into(), "q1".into()), None);
        assert_eq!(grown.insert("app".into(), "x".into()), None);
        assert_eq!(
            grown.insert("queue".into(), "q2".into()),
            Some("q1".to_string())
        );
        assert_eq!(grown.keys().collect::<Vec<_>>(), ["app", "queue"]);
        // One string holds every name and value: where each ends tells pairs apart.
        assert_ne!(Labels::from([("ab", "c")]), Labels::from([("a", "bc")]));
        assert_ne!(
            Labels::from([("a", "b"), ("c", "")]),
            Labels::from([("a", "bc")])
        );
        assert_eq!(
            Labels::from([("", "")]).iter().collect::<Vec<_>>(),
            [("", "")]
        );

        // Ordered as maps are: pair by pair, a prefix first.
        let sets = [
            vec![],
            vec![("a", "1")],
            vec![("a", "1"), ("b", "0")],
            vec![("a", "2")],
            vec![("b", "0")],
        ];
        for x in &sets {
            for y in &sets {
                let (lx, ly): (Labels, Labels) =
                    (x.iter().copied().collect(), y.iter().copied().collect());
                let to_map = |v: &Vec<(&str, &str)>| -> BTreeMap<String, String> {
                    v.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                };
                assert_eq!(lx.cmp(&ly), to_map(x).cmp(&to_map(y)), "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn values_from_data_are_served_encoded_and_kept_raw_for_people() {
        use crate::apimachinery::label::encode_value;
        let mut labels = Labels::from([("queue", "emb"), ("key", "queue:emb"), ("vhost", "/")]);
        // Served: every value valid, the valid ones as they were.
        assert_eq!(labels.get("queue"), Some("emb"));
        assert_eq!(labels.get("key"), Some(encode_value("queue:emb").as_ref()));
        assert_eq!(labels.get("vhost"), Some(encode_value("/").as_ref()));
        for (_, v) in &labels {
            assert!(
                crate::apimachinery::label::validate_value(v).is_ok(),
                "{v:?}"
            );
        }
        assert_eq!(
            serde_json::to_value(&labels).unwrap()["key"],
            serde_json::json!(encode_value("queue:emb"))
        );
        // Raw: what was given, for the check table, messages and /metrics.
        assert_eq!(
            labels.raw_iter().collect::<Vec<_>>(),
            [("key", "queue:emb"), ("queue", "emb"), ("vhost", "/")]
        );
        // Growing the set keeps every raw value, and insert returns the raw old one.
        assert_eq!(labels.insert("app".into(), "a b".into()), None);
        assert_eq!(
            labels.insert("key".into(), "other:key".into()),
            Some("queue:emb".to_string())
        );
        assert_eq!(
            labels.raw_iter().collect::<Vec<_>>(),
            [
                ("app", "a b"),
                ("key", "other:key"),
                ("queue", "emb"),
                ("vhost", "/")
            ]
        );
        assert_eq!(labels.get("key"), Some(encode_value("other:key").as_ref()));
        // Values that only differ where they are invalid stay two sets.
        assert_ne!(Labels::from([("k", "a:b")]), Labels::from([("k", "a/b")]));
        assert_eq!(Labels::from([("k", "a:b")]), Labels::from([("k", "a:b")]));
    }

    #[test]
    fn metric_names_follow_lowercase_dns_style() {
        for good in ["queue_length", "a", "embedding.queue-age_seconds", "q1"] {
            assert!(validate_metric_name(good).is_ok(), "{good} should be valid");
        }
        for bad in [
            "",
            "Queue",
            "_x",
            "x_",
            "a/b",
            "a b",
            ".",
            "..",
            &"x".repeat(254),
        ] {
            assert!(
                validate_metric_name(bad).is_err(),
                "{bad:?} should be invalid"
            );
        }
    }
}
