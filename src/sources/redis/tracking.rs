//! Being told when a queue key changes: `CLIENT TRACKING ON BCAST PREFIX …` on a connection of
//! its own per node, so a job pushed into an empty queue wakes the poll loop in milliseconds.
//!
//! Why this and not the alternatives:
//! - Keyspace notifications (`__keyspace@…__`) need `notify-keyspace-events` set on the server;
//!   the adapter never changes a server's configuration, and managed services often forbid it.
//! - `XREAD BLOCK` works for streams only and holds one blocked connection per stream.
//! - Tracking needs nothing on the server (Redis ≥ 6), is a setting of our own connection (no
//!   data is read or changed by it), and in broadcast mode reports every key under a prefix
//!   that any client modifies, including keys created after the last discovery.
//!
//! What is watched: each exact key (as a prefix, which also covers kombu's priority sub-lists)
//! and each pattern's literal prefix (`bull:*:wait` → `bull:`). Prefixes are made
//! non-overlapping (Redis refuses overlapping ones). A pattern without a literal prefix
//! (`*:queue`) cannot be watched without watching every key, so its source is polled alone and
//! says so. A reported key that matches a pattern but was not discovered makes the next poll
//! run discovery first. The tracking connection speaks RESP3 (push messages) whatever the
//! data connections speak; it needs `+hello +client|tracking` in an ACL. A refusal (Redis < 6,
//! an ACL without it) or a lost connection falls back to polling, logged once, shown as
//! `qma_push_watching 0`, and retried with backoff. A node that hangs never closes its
//! connection, so a cluster node that failed during the poll counts as lost too: its watch is
//! dropped and not made again until the node answers a poll; and making a watch is bounded by
//! the node's deadline, so a hung node cannot hold the poll there either.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};

use super::glob;
use super::topology::{Topology, WatchTarget};
use crate::wake::WakeSignal;

/// Most reported keys kept for the next poll's new-key check.
const MAX_REPORTED: usize = 1024;
/// Longest wait before tracking is tried again after a refusal or a lost connection.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The watch of one source.
pub struct Tracking {
    signal: WakeSignal,
    source: String,
    prefixes: Vec<String>,
    /// Patterns that cannot be watched (no literal prefix).
    unwatchable: Vec<String>,
    patterns: Arc<Vec<String>>,
    /// Keys matching a pattern that were reported changed since the last poll.
    reported: Arc<Mutex<BTreeSet<String>>>,
    watches: HashMap<WatchTarget, Watch>,
    failures: u32,
    retry_at: Option<Instant>,
    /// The last reason tracking is off, so each new reason is logged once.
    logged: Option<String>,
}

struct Watch {
    _conn: MultiplexedConnection,
    alive: Arc<AtomicBool>,
}

impl Tracking {
    /// A watch over `keys` and `patterns` that raises `signal`; connects at the first
    /// [`Tracking::ensure`].
    pub fn new(source: &str, signal: WakeSignal, keys: &[String], patterns: &[String]) -> Self {
        let mut unwatchable = Vec::new();
        let mut prefixes: Vec<String> = keys.to_vec();
        for p in patterns {
            let prefix = glob::literal_prefix(p);
            if prefix.is_empty() {
                unwatchable.push(p.clone());
            } else {
                prefixes.push(prefix);
            }
        }
        Tracking {
            signal,
            source: source.to_string(),
            prefixes: non_overlapping(prefixes),
            unwatchable,
            patterns: Arc::new(patterns.to_vec()),
            reported: Arc::default(),
            watches: HashMap::new(),
            failures: 0,
            retry_at: None,
            logged: None,
        }
    }

    /// The signal this watch raises.
    pub fn signal(&self) -> WakeSignal {
        self.signal.clone()
    }

    /// Keys reported changed since the last call that match a pattern (to find new ones).
    pub fn take_reported(&self) -> BTreeSet<String> {
        self.reported
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Makes sure every node `topology` reads has a live tracking connection; called at each
    /// poll, so a failover or a new slot map moves the watch with the reads.
    pub async fn ensure(&mut self, topology: &Topology) {
        if self.prefixes.is_empty() {
            self.off("no key or pattern prefix to watch; polling only".into());
            return;
        }
        let targets = topology.watch_targets();
        let failed = topology.failed_nodes();
        self.watches.retain(|t, w| {
            targets.contains(t) && w.alive.load(Ordering::Relaxed) && !failed.contains(t)
        });
        let missing: Vec<WatchTarget> = targets
            .iter()
            .filter(|t| !self.watches.contains_key(t) && !failed.contains(t))
            .cloned()
            .collect();
        if !missing.is_empty() && self.retry_at.is_none_or(|t| Instant::now() >= t) {
            for target in missing {
                match self.watch(topology, &target).await {
                    Ok(w) => {
                        self.watches.insert(target, w);
                    }
                    Err(reason) => {
                        self.failures = self.failures.saturating_add(1);
                        let wait = Duration::from_secs(1 << self.failures.min(6)).min(MAX_RETRY);
                        self.retry_at = Some(Instant::now() + wait);
                        self.off(format!(
                            "{reason}; polling only, tracking tried again in {}s",
                            wait.as_secs()
                        ));
                        return;
                    }
                }
            }
        }
        if let Some(silent) = targets.iter().find(|t| failed.contains(t)) {
            self.off(format!(
                "node {silent} did not answer the poll; polling only until it does"
            ));
            return;
        }
        let all = targets.iter().all(|t| self.watches.contains_key(t));
        if all && self.unwatchable.is_empty() {
            self.failures = 0;
            self.retry_at = None;
            if self.logged.take().is_some() || !self.signal.watching() {
                tracing::info!(source = %self.source, prefixes = ?self.prefixes, nodes = targets.len(), "watching keys for changes (CLIENT TRACKING): a push wakes the poll");
            }
            self.signal.set_watching(true);
        } else if !self.unwatchable.is_empty() {
            self.off(format!(
                "pattern(s) {:?} have no literal prefix to watch; those keys are polled only",
                self.unwatchable
            ));
        } else {
            self.signal.set_watching(false);
        }
    }

    fn off(&mut self, reason: String) {
        self.signal.set_watching(false);
        if self.logged.as_deref() != Some(reason.as_str()) {
            tracing::warn!(source = %self.source, reason = %reason, "not watching keys for changes");
            self.logged = Some(reason);
        }
    }

    async fn watch(&self, topology: &Topology, target: &WatchTarget) -> Result<Watch, String> {
        let alive = Arc::new(AtomicBool::new(true));
        let handler = {
            let (signal, patterns, reported, alive) = (
                self.signal.clone(),
                self.patterns.clone(),
                self.reported.clone(),
                alive.clone(),
            );
            move |push: PushInfo| -> Result<(), std::convert::Infallible> {
                match push.kind {
                    PushKind::Invalidate => {
                        note_keys(&push.data, &patterns, &reported);
                        signal.wake();
                    }
                    PushKind::Disconnection => {
                        alive.store(false, Ordering::Relaxed);
                        signal.set_watching(false);
                        // A poll now re-makes the watch (or fails, and backs off), rather than
                        // at the next interval, up to 30 s away.
                        signal.wake();
                    }
                    _ => {}
                }
                Ok(())
            }
        };
        let deadline = topology.node_deadline();
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("TRACKING").arg("ON").arg("BCAST");
        for p in &self.prefixes {
            cmd.arg("PREFIX").arg(p);
        }
        let made = tokio::time::timeout(deadline, async {
            let mut conn = topology
                .connect_watch(target, handler)
                .await
                .map_err(|e| format!("tracking connection to {target}: {e}"))?;
            let answer = cmd.query_async::<Value>(&mut conn).await;
            Ok::<_, String>((conn, answer))
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "tracking connection to {target}: no answer within {deadline:?}"
            ))
        });
        let (conn, answer) = made?;
        match answer {
            Ok(Value::ServerError(e)) => Err(format!(
                "{target} refused CLIENT TRACKING: {} {} (needs Redis 6+ and +client|tracking in the ACL)",
                e.code(),
                e.details().unwrap_or("")
            )),
            Ok(_) => Ok(Watch { _conn: conn, alive }),
            Err(e) => Err(format!(
                "{target} refused CLIENT TRACKING: {} (needs Redis 6+ and +client|tracking in the ACL)",
                super::connect::describe(&e)
            )),
        }
    }
}

/// Keeps the reported keys that match a pattern, for the new-key check.
fn note_keys(data: &[Value], patterns: &[String], reported: &Mutex<BTreeSet<String>>) {
    if patterns.is_empty() {
        return;
    }
    let mut keys = Vec::new();
    for v in data {
        match v {
            Value::Array(items) => keys.extend(items.iter()),
            other => keys.push(other),
        }
    }
    let Ok(mut set) = reported.lock() else {
        return;
    };
    for k in keys {
        let Value::BulkString(k) = k else { continue };
        if set.len() < MAX_REPORTED && patterns.iter().any(|p| glob::matches(p.as_bytes(), k)) {
            set.insert(String::from_utf8_lossy(k).into_owned());
        }
    }
}

/// The prefixes with every one that extends another removed (`queue:` covers `queue:embed`),
/// sorted: Redis refuses overlapping prefixes in one `CLIENT TRACKING` call.
fn non_overlapping(mut prefixes: Vec<String>) -> Vec<String> {
    prefixes.sort();
    prefixes.dedup();
    let mut kept: Vec<String> = Vec::new();
    for p in prefixes {
        // Sorted: a prefix of `p` sorts before it, and the last kept one is the only candidate.
        if kept.last().is_some_and(|k| p.starts_with(k.as_str())) {
            continue;
        }
        kept.push(p);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_prefixes_collapse_to_the_shortest() {
        let got = non_overlapping(
            [
                "queue:embed",
                "queue:",
                "bull:",
                "bull:embed:wait",
                "rq:queue:a",
                "queue:",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert_eq!(got, ["bull:", "queue:", "rq:queue:a"]);
    }

    #[test]
    fn only_keys_matching_a_pattern_are_kept_for_discovery() {
        let reported = Mutex::new(BTreeSet::new());
        let keys = Value::Array(vec![
            Value::BulkString(b"bull:embed:wait".to_vec()),
            Value::BulkString(b"bull:embed:123".to_vec()),
        ]);
        note_keys(&[keys], &["bull:*:wait".into()], &reported);
        let got: Vec<String> = reported.into_inner().unwrap().into_iter().collect();
        assert_eq!(got, ["bull:embed:wait"]);
    }
}
