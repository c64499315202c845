//! Waking a RabbitMQ source whose queues sit at zero: between polls, the queues whose `ready`
//! series was 0 at the last poll are declared again (passive `queue.declare`, which reads the
//! live count and changes nothing) every `idle_poll_interval`, at most `idle_max_queues` of them;
//! as soon as one holds a message, the poll loop is woken and the full poll serves it.
//!
//! Over AMQP only. The management API's counts come from its statistics, refreshed every
//! `collect_statistics_interval` (5 s by default; measured: a message published to an empty
//! queue showed in `GET /api/queues/{vhost}/{name}` after 4.1 s), so asking it more often
//! would wake nothing sooner, and the adapter never changes the broker's settings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};

use super::amqp::{Amqp, DeclareOutcome};
use crate::wake::{WakePace, WakeSignal};

/// The idle watch of one source; stops when dropped.
pub struct IdleWatch {
    /// (vhost, queue) of the series at 0 after the last poll.
    idle: Arc<Mutex<Vec<(String, String)>>>,
    signal: WakeSignal,
    _stop: DropGuard,
}

impl IdleWatch {
    /// Starts the watch on the current runtime, declaring through `amqp` (a connection of its
    /// own). `None` outside a runtime (nothing to run it on).
    pub fn start(
        source: &str,
        amqp: Amqp,
        every: Duration,
        max_queues: usize,
    ) -> Option<IdleWatch> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let signal = WakeSignal::new(WakePace {
            debounce: Duration::ZERO,
            // At most one woken poll per check: the watch itself is the rate limit.
            max_polls_per_second: 1.0 / every.as_secs_f64().max(0.001),
        });
        let idle: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let token = CancellationToken::new();
        handle.spawn(watch(
            source.to_string(),
            amqp,
            every,
            max_queues,
            idle.clone(),
            signal.clone(),
            token.clone(),
        ));
        Some(IdleWatch {
            idle,
            signal,
            _stop: token.drop_guard(),
        })
    }

    /// Records which queues are at zero now.
    pub fn set_idle(&self, queues: Vec<(String, String)>) {
        if let Ok(mut idle) = self.idle.lock() {
            *idle = queues;
        }
    }

    /// The signal the watch raises.
    pub fn signal(&self) -> WakeSignal {
        self.signal.clone()
    }
}

async fn watch(
    source: String,
    mut amqp: Amqp,
    every: Duration,
    max_queues: usize,
    idle: Arc<Mutex<Vec<(String, String)>>>,
    signal: WakeSignal,
    token: CancellationToken,
) {
    let mut logged: Option<String> = None;
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let queues: Vec<(String, String)> = idle
            .lock()
            .map(|q| q.iter().take(max_queues).cloned().collect())
            .unwrap_or_default();
        if queues.is_empty() {
            continue;
        }
        let mut per_vhost: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (vhost, queue) in queues {
            per_vhost.entry(vhost).or_default().push(queue);
        }
        let mut woke = false;
        let mut failed = None;
        for (vhost, queues) in &per_vhost {
            match amqp.declare_all(vhost, queues).await {
                Ok(outcomes) => {
                    if outcomes
                        .iter()
                        .any(|o| matches!(o, DeclareOutcome::Found(d) if d.ready > 0))
                    {
                        woke = true;
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        signal.set_watching(failed.is_none());
        match failed {
            Some(e) if logged.as_deref() != Some(e.as_str()) => {
                tracing::warn!(source = %source, error = %e, "idle queue check failed; polling only until it works again");
                logged = Some(e);
            }
            None => logged = None,
            _ => {}
        }
        if woke {
            signal.wake();
            // The poll will record the queue as busy; until then it is not checked again.
            if let Ok(mut q) = idle.lock() {
                q.clear();
            }
        }
    }
}
