//! Waking a NATS source whose metrics sit at zero: while a metric's stream (or its consumer's
//! filter) is idle, a plain core NATS subscription to those subjects waits for the next
//! publish. The first message wakes the poll loop and the subscription ends; the next poll
//! says again which subjects are idle.
//!
//! The core subscription can hear a publish before JetStream has stored it (a replicated
//! stream stores once a quorum has it): a woken poll that still finds the subject idle wakes
//! the loop again shortly, a few times, so the message is not left to the next interval.
//!
//! A core subscription has no relation to JetStream's consumers, so it changes no delivery,
//! acknowledges nothing and leaves every consumer's state as it was. It receives the payloads
//! (dropped unread), so it is held only while its subjects are idle: a stream whose consumer
//! keeps up, its lag back at 0 at most polls, is subscribed again at each, and so costs up to
//! `max_polls_per_second` woken polls, as a busy Redis key does. It needs subscribe permission
//! on the subjects; where the account refuses it, the server says so on the connection, the
//! watch is turned off with one log line, and the source is polled only.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::task::JoinHandle;

use crate::wake::WakeSignal;

/// The subscriptions of one source; they end when it is dropped.
pub struct SubjectWatch {
    source: String,
    signal: WakeSignal,
    /// Set once the server refused a subscription: waking is off for good.
    refused: Arc<AtomicBool>,
    subscriptions: HashMap<String, JoinHandle<()>>,
    /// Subjects whose subscription heard a message, with the wakes made again for it since.
    heard: Arc<Mutex<HashMap<String, u32>>>,
}

/// Most wakes made again for a message heard before JetStream stored it: after 100, 200 and
/// 400 ms; past that the next interval's poll serves it.
const MAX_REWAKES: u32 = 3;

impl SubjectWatch {
    /// A watch waking `signal`; nothing subscribed yet.
    pub fn new(source: &str, signal: WakeSignal) -> Self {
        SubjectWatch {
            source: source.to_string(),
            signal,
            refused: Arc::new(AtomicBool::new(false)),
            subscriptions: HashMap::new(),
            heard: Arc::default(),
        }
    }

    /// What the connection calls when the server refuses a subscription: turns the watch off,
    /// with one log line naming what to allow.
    pub fn on_refused(&self) -> Arc<dyn Fn(String) + Send + Sync> {
        let refused = self.refused.clone();
        let signal = self.signal.clone();
        let source = self.source.clone();
        Arc::new(move |error: String| {
            signal.set_watching(false);
            if !refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    source = %source,
                    %error,
                    "NATS refused the wake subscription: waking is off for this source, which is polled only; allow this user to subscribe to the streams' subjects, or set wake.enabled: false"
                );
            }
        })
    }

    /// Holds subscriptions to exactly `idle` (the subjects of the metrics at zero after this
    /// poll) over `client`: new ones are subscribed, ones no longer idle or that fired are
    /// dropped (a fired one is subscribed again if this poll still found it idle).
    pub async fn set_idle(&mut self, client: &async_nats::Client, idle: BTreeSet<String>) {
        if self.refused.load(Ordering::Relaxed) {
            self.stop_all();
            return;
        }
        self.rewake(&idle);
        self.subscriptions.retain(|subject, task| {
            let keep = idle.contains(subject) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let mut failed = None;
        for subject in idle {
            if self.subscriptions.contains_key(&subject) {
                continue;
            }
            match client.subscribe(subject.clone()).await {
                Ok(mut sub) => {
                    let signal = self.signal.clone();
                    let heard = self.heard.clone();
                    let name = subject.clone();
                    let task = tokio::spawn(async move {
                        // The payload is dropped unread; one message is enough.
                        if sub.next().await.is_some() {
                            if let Ok(mut h) = heard.lock() {
                                h.entry(name).or_insert(0);
                            }
                            signal.wake();
                        }
                    });
                    self.subscriptions.insert(subject, task);
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        match failed {
            Some(e) => {
                tracing::debug!(source = %self.source, error = %e, "a wake subscription could not be made; polling covers it");
                self.signal.set_watching(false);
            }
            None => self
                .signal
                .set_watching(!self.refused.load(Ordering::Relaxed)),
        }
    }

    /// After a woken poll: the subjects that heard a message and are still idle (JetStream had
    /// not stored it yet) get one more wake a little later, up to [`MAX_REWAKES`]; the others
    /// are done with.
    fn rewake(&self, idle: &BTreeSet<String>) {
        let Ok(mut heard) = self.heard.lock() else {
            return;
        };
        heard.retain(|subject, n| idle.contains(subject) && *n < MAX_REWAKES);
        let Some(n) = heard
            .values_mut()
            .map(|n| {
                *n += 1;
                *n
            })
            .max()
        else {
            return;
        };
        let signal = self.signal.clone();
        let after = Duration::from_millis(50) * 2u32.pow(n);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            signal.wake();
        });
    }

    fn stop_all(&mut self) {
        for (_, task) in self.subscriptions.drain() {
            task.abort();
        }
    }
}

impl Drop for SubjectWatch {
    fn drop(&mut self) {
        self.stop_all();
    }
}
