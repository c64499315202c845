//! Key discovery: which keys each pattern metric polls.
//!
//! Patterns find their keys with `SCAN ... MATCH ... TYPE`, never `KEYS`, on their own slower
//! interval (`discovery_interval`). The first discovery runs inside the poll (there is nothing
//! to poll before it). After it, a scan on one server or a Sentinel's master runs beside the
//! polls (a task on a clone of the multiplexed connection) and the first poll after it finishes
//! takes its keys, so a large keyspace never holds back the poll of known keys. A cluster's
//! scan, and one for keys the server reported changed (a new queue), still run inside the poll.
//!
//! Job-library presets over every queue (`queue: "*"`) find their queues the same way: by a
//! marker key every queue has (a pattern), or from the set the library keeps its queue names
//! in (Sidekiq `queues`, RQ `rq:queues`, kombu's binding sets), read with `SMEMBERS` at the same
//! interval, inside the poll (one command per set).
//!
//! Redis deletes a list or sorted set when its last element goes, so such a key found by a
//! pattern stays polled after it empties (served as `0`, and a job pushed into it is seen on
//! the next poll) until it has been missing for `pattern_key_retention`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::batch::Batch;
use super::config::KeyType;
use super::node::{self, Scanned};
use super::reply;
use super::topology::Topology;
use super::tracking::Tracking;
use crate::sources::source::SourceError;

/// Most keys one pattern may match; beyond it the pattern is an error rather than a surprise.
pub const MAX_KEYS_PER_PATTERN: usize = 100_000;

/// What a source's metrics need found: the keys of patterns, and the members of registry sets.
#[derive(Debug, Default)]
pub struct Wanted {
    /// (pattern, type) pairs to scan for.
    pub patterns: BTreeSet<(String, KeyType)>,
    /// Sets whose members are read (job-library registries).
    pub sets: BTreeSet<String>,
    /// Patterns whose matching sets' members are read (each also among `patterns`).
    pub set_patterns: BTreeSet<String>,
}

/// The keys of a source's pattern metrics, and when and how they are next looked for.
pub struct Discovery {
    /// The (pattern, type) pairs scanned for.
    patterns: BTreeSet<(String, KeyType)>,
    /// Registry sets read by name, and patterns whose sets are read.
    sets: BTreeSet<String>,
    set_patterns: BTreeSet<String>,
    /// Each registry set's members, as last read.
    members: HashMap<String, Vec<String>>,
    /// When the registry sets were last read.
    members_read: Option<Instant>,
    interval: Duration,
    /// Keys polled per (pattern, type), each list sorted: what the last discovery found, plus
    /// list and sorted-set keys that have been missing for less than `key_retention`.
    keys: HashMap<(String, KeyType), Vec<String>>,
    last: Option<Instant>,
    /// How long a pattern key that stopped existing stays polled.
    key_retention: Duration,
    /// Pattern keys a poll or a discovery found missing, and since when.
    missing_since: HashMap<String, Instant>,
    /// Keys reported changed that discovery did not take (another type): not worth another
    /// discovery each time they change.
    passed_over: HashSet<String>,
    /// A discovery running beside the polls, applied by the first poll after it finishes.
    background: Option<BackgroundDiscovery>,
}

/// What one discovery found: the keys of each (pattern, type).
type Discovered = Vec<((String, KeyType), Scanned)>;

/// A discovery task, stopped when its source is dropped (a reload) or a newer one starts.
struct BackgroundDiscovery(tokio::task::JoinHandle<Result<Discovered, SourceError>>);

impl Drop for BackgroundDiscovery {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Discovery {
    /// Discovery of what `wanted` names; nothing is scanned before the first
    /// [`Discovery::run`].
    pub fn new(wanted: Wanted, interval: Duration, key_retention: Duration) -> Self {
        let Wanted {
            mut patterns,
            sets,
            set_patterns,
        } = wanted;
        patterns.extend(set_patterns.iter().map(|p| (p.clone(), KeyType::Set)));
        Discovery {
            patterns,
            sets,
            set_patterns,
            members: HashMap::new(),
            members_read: None,
            interval,
            keys: HashMap::new(),
            last: None,
            key_retention,
            missing_since: HashMap::new(),
            passed_over: HashSet::new(),
            background: None,
        }
    }

    /// The keys polled for `pattern` of type `key_type`, sorted.
    pub fn keys(&self, pattern: &str, key_type: KeyType) -> &[String] {
        self.keys
            .get(&(pattern.to_string(), key_type))
            .map_or(&[], Vec::as_slice)
    }

    /// A discovery that has found `keys` (per pattern and type) and read `members` (per set),
    /// for tests of what is made of them.
    #[cfg(test)]
    pub fn found(
        keys: Vec<((&str, KeyType), Vec<&str>)>,
        members: Vec<(&str, Vec<&str>)>,
    ) -> Discovery {
        let owned = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
        let mut d = Discovery::new(Wanted::default(), Duration::ZERO, Duration::ZERO);
        d.keys = keys
            .into_iter()
            .map(|((p, t), k)| ((p.to_string(), t), owned(k)))
            .collect();
        d.members = members
            .into_iter()
            .map(|(s, m)| (s.to_string(), owned(m)))
            .collect();
        d
    }

    /// The members of registry set `key`, as last read.
    pub fn members(&self, key: &str) -> &[String] {
        self.members.get(key).map_or(&[], Vec::as_slice)
    }

    /// Brings the keys up to date as far as this poll should: takes a finished background
    /// scan, scans inside the poll when it must (the first time, keys `tracking` reported that
    /// no pattern list holds yet, every time on a cluster), or starts a background scan when
    /// one is due. Returns whether the polled keys changed.
    ///
    /// # Errors
    /// A scan that failed (inside the poll, or the background one just collected).
    pub async fn run(
        &mut self,
        topology: &mut Topology,
        tracking: Option<&Tracking>,
    ) -> Result<bool, SourceError> {
        let mut changed = self.finish_background(topology).await?;
        let mut reported = self.unknown_reported(tracking);
        // A registry set that changed (a library listed a new queue) is read again now.
        let registry_changed = reported.iter().any(|k| self.sets.contains(k));
        reported.retain(|k| !self.sets.contains(k));
        let inline = if !reported.is_empty() {
            true
        } else if self.due() && self.background.is_none() {
            self.last.is_none() || !self.start_background(topology).await?
        } else {
            false
        };
        if inline {
            changed |= self.scan(topology).await?;
            if self.passed_over.len() > 10_000 {
                self.passed_over.clear();
            }
            // A key discovery did not take (another type) does not trigger it again.
            for key in reported {
                if !self.holds(&key) {
                    self.passed_over.insert(key);
                }
            }
        }
        if !(self.sets.is_empty() && self.set_patterns.is_empty())
            && (registry_changed
                || self
                    .members_read
                    .is_none_or(|t| t.elapsed() >= self.interval))
        {
            changed |= self.read_sets(topology).await?;
        }
        Ok(changed)
    }

    /// Reads every registry set's members (`SMEMBERS`, one round trip); returns whether any
    /// changed.
    async fn read_sets(&mut self, topology: &mut Topology) -> Result<bool, SourceError> {
        let mut sets: BTreeSet<String> = self.sets.clone();
        for pattern in &self.set_patterns {
            sets.extend(self.keys(pattern, KeyType::Set).iter().cloned());
        }
        let sets: Vec<String> = sets.into_iter().collect();
        let mut batch = Batch::new();
        let idx: Vec<usize> = sets
            .iter()
            .map(|set| batch.add(&[b"SMEMBERS", set.as_bytes()]))
            .collect();
        batch.seal();
        let replies = topology.run(&batch, None).await?;
        let mut members = HashMap::new();
        for (set, i) in sets.into_iter().zip(idx) {
            let bad = |what: String| SourceError::BadReply {
                what: format!("SMEMBERS {set:?}: {what}"),
            };
            let v = replies.get(i).ok_or_else(|| bad("no reply".to_string()))?;
            if let Some(e) = reply::server_error(v) {
                // A node that did not answer, or a key of another type: the queues last
                // known stay (a cluster node's failure fails only its own series), and the
                // reason is logged at each read until it passes.
                tracing::warn!(set = %set, "reading a job library's queue registry failed: {e}; keeping the queues last found in it");
                let kept = self.members.get(&set).cloned().unwrap_or_default();
                members.insert(set, kept);
                continue;
            }
            let items = reply::array(v).map_err(bad)?;
            if items.len() > MAX_KEYS_PER_PATTERN {
                return Err(bad(format!(
                    "{} members, more than the {MAX_KEYS_PER_PATTERN} queues one registry may list",
                    items.len()
                )));
            }
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                names.extend(reply::text(item).map_err(bad)?);
            }
            names.sort();
            members.insert(set, names);
        }
        self.members_read = Some(Instant::now());
        let changed = members != self.members;
        self.members = members;
        Ok(changed)
    }

    /// Notes what a poll found of pattern key `key`: a key that exists is no longer missing;
    /// one that does not is missing from `at` on, unless it already was.
    pub fn note_presence(&mut self, key: &str, exists: bool, at: Instant) {
        // Steady state (every key there) costs no hashing.
        if exists {
            if !self.missing_since.is_empty() {
                self.missing_since.remove(key);
            }
        } else {
            self.missing_since.entry(key.to_string()).or_insert(at);
        }
    }

    /// Discovery inside the poll.
    async fn scan(&mut self, topology: &mut Topology) -> Result<bool, SourceError> {
        // A scan running beside the polls is older than this one: its answer is not wanted.
        self.background = None;
        let mut scanned = Vec::new();
        for (pattern, key_type) in &self.patterns {
            let found = topology
                .scan(pattern, key_type.redis_name(), MAX_KEYS_PER_PATTERN)
                .await?;
            scanned.push(((pattern.clone(), *key_type), found));
        }
        self.last = Some(Instant::now());
        Ok(self.apply(scanned, topology))
    }

    /// Starts discovery beside the polls, on a clone of the multiplexed connection, where the
    /// topology has one node to scan (one server, a Sentinel's master). A `SCAN` of a large
    /// keyspace is many round trips (1,000,000 keys: 1,000 of them); inside a poll it held back
    /// the poll of every known key for as long. Returns whether it started.
    async fn start_background(&mut self, topology: &mut Topology) -> Result<bool, SourceError> {
        let Some((display, mut conn)) = topology.scan_connection().await? else {
            return Ok(false);
        };
        let wanted = self.patterns.clone();
        let deadline = topology.node_deadline();
        let task = tokio::spawn(async move {
            let mut scanned = Vec::new();
            for (pattern, key_type) in wanted {
                let keys = node::scan_node(
                    &mut conn,
                    &pattern,
                    key_type.redis_name(),
                    MAX_KEYS_PER_PATTERN,
                    &display,
                    deadline,
                )
                .await?;
                let found = Scanned {
                    keys,
                    partial: false,
                };
                scanned.push(((pattern, key_type), found));
            }
            Ok(scanned)
        });
        self.background = Some(BackgroundDiscovery(task));
        self.last = Some(Instant::now());
        Ok(true)
    }

    /// Applies a discovery that finished beside the polls, if one did; returns whether the
    /// keys changed. A failed one fails this poll, as a failed discovery inside it would.
    async fn finish_background(&mut self, topology: &mut Topology) -> Result<bool, SourceError> {
        if !self.background.as_ref().is_some_and(|b| b.0.is_finished()) {
            return Ok(false);
        }
        let Some(mut done) = self.background.take() else {
            return Ok(false);
        };
        match (&mut done.0).await {
            Ok(Ok(scanned)) => Ok(self.apply(scanned, topology)),
            Ok(Err(e)) => {
                topology.reset();
                Err(e)
            }
            Err(e) => Err(SourceError::BadReply {
                what: format!("key discovery did not finish: {e}"),
            }),
        }
    }

    /// Takes the keys a discovery found as the keys to poll; returns whether they changed.
    fn apply(&mut self, scanned: Discovered, topology: &Topology) -> bool {
        let mut found = HashMap::new();
        for ((pattern, key_type), scanned) in scanned {
            let mut keys = scanned.keys;
            if scanned.partial {
                // A cluster node that did not answer keeps the keys it was last known to hold.
                let kept = self.keys.get(&(pattern.clone(), key_type));
                for key in kept.into_iter().flatten() {
                    if topology.unscanned(key) {
                        keys.insert(key.clone());
                    }
                }
            }
            for key in &keys {
                self.missing_since.remove(key);
            }
            let polled = self.keys.remove(&(pattern.clone(), key_type));
            if key_type.deleted_when_empty() {
                // Keys Redis deleted because they emptied stay until missing for too long.
                let now = Instant::now();
                for key in polled.into_iter().flatten() {
                    if keys.len() >= MAX_KEYS_PER_PATTERN || keys.contains(&key) {
                        continue;
                    }
                    let since = *self.missing_since.entry(key.clone()).or_insert(now);
                    if since.elapsed() < self.key_retention {
                        keys.insert(key);
                    }
                }
            }
            found.insert((pattern, key_type), keys.into_iter().collect());
        }
        let polled: HashSet<&String> = found.values().flatten().collect();
        self.missing_since.retain(|key, _| polled.contains(key));
        let changed = found != self.keys;
        self.keys = found;
        changed
    }

    fn due(&self) -> bool {
        !self.patterns.is_empty() && self.last.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Keys reported changed that match a pattern but are not polled yet: new queues, which
    /// discovery should pick up now rather than at its interval.
    fn unknown_reported(&self, tracking: Option<&Tracking>) -> Vec<String> {
        let Some(tracking) = tracking else {
            return Vec::new();
        };
        tracking
            .take_reported()
            .into_iter()
            .filter(|k| !self.holds(k) && !self.passed_over.contains(k))
            .collect()
    }

    fn holds(&self, key: &String) -> bool {
        // Each list is sorted (it comes from a BTreeSet).
        self.keys
            .values()
            .any(|keys| keys.binary_search(key).is_ok())
    }
}

/// The part of `key` that `pattern`'s wildcards matched: the key less the pattern's literal
/// prefix and suffix (`queue:*` and `queue:embed` give `embed`; `bull:*:wait` and
/// `bull:embed:wait` give `embed`).
pub fn wildcard_part(pattern: &str, key: &str) -> String {
    let is_meta = |c: char| matches!(c, '*' | '?' | '[' | '\\');
    let prefix_len = pattern.find(is_meta).unwrap_or(pattern.len());
    let suffix_start = pattern
        .rfind(|c: char| is_meta(c) || c == ']')
        .map_or(pattern.len(), |i| i + 1);
    let prefix = &pattern[..prefix_len];
    let suffix = &pattern[suffix_start.max(prefix_len)..];
    let rest = key.strip_prefix(prefix).unwrap_or(key);
    rest.strip_suffix(suffix).unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_part_strips_the_pattern_literals() {
        assert_eq!(wildcard_part("queue:*", "queue:embed"), "embed");
        assert_eq!(wildcard_part("bull:*:wait", "bull:embed:wait"), "embed");
        assert_eq!(wildcard_part("rq:queue:*", "rq:queue:high"), "high");
        assert_eq!(wildcard_part("q?", "q1"), "1");
        assert_eq!(wildcard_part("jobs:[ab]*", "jobs:a1"), "a1");
    }
}
