//! Job libraries' RabbitMQ layouts, as data: for a library, its queue and a measure, which
//! RabbitMQ queue holds what the measure counts and which of its counts it is. Like the Redis
//! presets (`sources::redis::libraries`), a preset only chooses what the generic reads read.
//!
//! Checked against the libraries' code (`../shared/reference/job-libraries.md` §2) and their
//! real clients and workers (`tests/job_libraries.rs`).

use std::collections::BTreeSet;

use super::config::RabbitLibrary;
use super::management::Binding;
use crate::sources::measure::Measure;

/// Where a library keeps what a measure counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// In a queue: its name and which of its counts (a RabbitMQ measure).
    Queue {
        /// The RabbitMQ queue.
        queue: String,
        /// The RabbitMQ measure read of it.
        measure: Measure,
    },
    /// Nowhere a reader can see: every series is this error.
    Unknowable(String),
}

fn queue(name: String, measure: Measure) -> Layout {
    Layout::Queue {
        queue: name,
        measure,
    }
}

/// Where `library` keeps what `measure` counts for its queue `name`.
pub fn layout(library: RabbitLibrary, name: &str, measure: Measure) -> Layout {
    use Measure::{
        ArrivalRate, CompletionRate, Delayed, DrainSeconds, Due, Failed, InFlight, Length,
        OldestAgeSeconds, Ready, Total, Unacked, WorkersNeeded,
    };
    match (library, measure) {
        // Celery 5.7 (`app/amqp.py`): a task is published to the queue named by its routing;
        // a worker prefetches (`worker_prefetch_multiplier` × concurrency) and holds ETA and
        // countdown tasks unacknowledged until their time.
        (RabbitLibrary::Celery, Length) => queue(name.into(), Ready),
        (RabbitLibrary::Celery, InFlight) => queue(name.into(), Unacked),
        (RabbitLibrary::Celery, OldestAgeSeconds) => Layout::Unknowable(
            "Celery sets no AMQP timestamp on a task message; a producer can set one in a before_task_publish signal handler (properties[\"timestamp\"] = int(time.time()), read with the generic block {queue: <queue>} and measure oldest_age_seconds), or the broker can stamp every message (RabbitMQ 3.12+: message_interceptors.incoming.set_header_timestamp.overwrite = false in rabbitmq.conf)".into(),
        ),
        (RabbitLibrary::Celery, Due | Delayed) => Layout::Unknowable(
            "Celery delivers a task with an ETA or countdown to a worker at once, which holds it unacknowledged until its time: it is counted in in_flight, and cannot be told from a prefetched task".into(),
        ),
        (RabbitLibrary::Celery, Failed) => Layout::Unknowable(
            "Celery keeps no failed tasks in the broker (a result backend records outcomes)".into(),
        ),
        // dramatiq 2.2 (`brokers/rabbitmq.py`): `<q>` holds messages to run; a delayed message
        // goes to `<q>.DQ`, whose consumers hold it unacknowledged until its eta and then
        // enqueue it on `<q>`; dead letters go to `<q>.XQ` (kept 7 days).
        (RabbitLibrary::Dramatiq, Length) => queue(name.into(), Ready),
        (RabbitLibrary::Dramatiq, InFlight) => queue(name.into(), Unacked),
        (RabbitLibrary::Dramatiq, OldestAgeSeconds) => Layout::Unknowable(
            "dramatiq sets no AMQP timestamp: its message_timestamp is inside the message body, which is not read without consuming; the broker can stamp every message (RabbitMQ 3.12+: message_interceptors.incoming.set_header_timestamp.overwrite = false in rabbitmq.conf)".into(),
        ),
        (RabbitLibrary::Dramatiq, Delayed) => queue(format!("{name}.DQ"), Total),
        (RabbitLibrary::Dramatiq, Due) => Layout::Unknowable(
            "dramatiq's delayed messages wait in <queue>.DQ, held unacknowledged by workers until their eta, which is inside each message: the broker cannot tell the due ones without consuming (delayed counts them all)".into(),
        ),
        (RabbitLibrary::Dramatiq, Failed) => queue(format!("{name}.XQ"), Total),
        // The queue's own counters: publishes in, acknowledgements out. dramatiq acknowledges
        // a message once its actor has run; Celery, unless `task_acks_late`, when a worker
        // starts the task, so its completions are starts (the same in a steady state).
        (_, ArrivalRate | CompletionRate | DrainSeconds | WorkersNeeded) => {
            queue(name.into(), measure)
        }
        (_, other) => Layout::Unknowable(format!(
            "measure {other} does not apply to a job library's queue"
        )),
    }
}

/// The job-library queues among a vhost's `queues`, told by their names and `bindings`, for
/// `discover`:
/// - dramatiq declares `<q>`, `<q>.DQ` and `<q>.XQ` together (`brokers/rabbitmq.py`
///   `_ensure_queue`): a queue with both beside it is dramatiq's `<q>`;
/// - kombu binds a Celery queue `<q>` from the direct exchange of the same name with routing
///   key `<q>` (`Queue(name, Exchange(name), routing_key=name)`, Celery's `task_queues`
///   default); Celery's own reply and event queues (`*.pidbox`, `celeryev.*`) and quorum ETA
///   queues (`celery_delayed_*`) are not work queues.
///
/// Returns each library queue found, and every queue it accounts for (the library's own
/// delay, dead-letter, reply and event queues too), so that the rest can be counted.
pub fn recognise(
    queues: &BTreeSet<String>,
    bindings: &[Binding],
) -> (Vec<(RabbitLibrary, String)>, BTreeSet<String>) {
    let mut found = Vec::new();
    let mut known = BTreeSet::new();
    for q in queues {
        let (dq, xq) = (format!("{q}.DQ"), format!("{q}.XQ"));
        if queues.contains(&dq) && queues.contains(&xq) {
            found.push((RabbitLibrary::Dramatiq, q.clone()));
            known.extend([q.clone(), dq, xq]);
        }
    }
    let celery_internal = |q: &str| {
        q.ends_with(".pidbox") || q.starts_with("celeryev.") || q.starts_with("celery_delayed_")
    };
    for b in bindings {
        let q = &b.destination;
        if b.source == *q && b.routing_key == *q && queues.contains(q) && !known.contains(q) {
            if celery_internal(q) {
                continue;
            }
            found.push((RabbitLibrary::Celery, q.clone()));
            known.insert(q.clone());
        }
    }
    if found.iter().any(|(l, _)| *l == RabbitLibrary::Celery) {
        known.extend(queues.iter().filter(|q| celery_internal(q)).cloned());
    }
    found.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    (found, known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::measure::JOB_LIBRARY_MEASURES;

    #[test]
    fn dead_letters_and_delayed_messages_are_never_waiting_work() {
        for measure in JOB_LIBRARY_MEASURES {
            if let Layout::Queue { queue, .. } = layout(RabbitLibrary::Dramatiq, "embed", *measure)
            {
                // The rates and drain time are the queue's own (work in and out of it).
                let waiting = matches!(
                    measure,
                    Measure::Length
                        | Measure::InFlight
                        | Measure::ArrivalRate
                        | Measure::CompletionRate
                        | Measure::DrainSeconds
                        | Measure::WorkersNeeded
                );
                assert_eq!(queue == "embed", waiting, "{measure}: {queue}");
            }
        }
        assert_eq!(
            layout(RabbitLibrary::Dramatiq, "embed", Measure::Failed),
            queue("embed.XQ".into(), Measure::Total)
        );
    }

    #[test]
    fn library_queues_are_told_by_their_siblings_and_bindings() {
        let queues: BTreeSet<String> = [
            "embed",
            "embed.DQ",
            "embed.XQ",
            "celery",
            "w1.celery.pidbox",
            "celeryev.x",
            "other",
        ]
        .map(String::from)
        .into();
        let bind = |source: &str, q: &str, rk: &str| Binding {
            source: source.into(),
            destination: q.into(),
            destination_type: "queue".into(),
            routing_key: rk.into(),
        };
        let bindings = [
            bind("celery", "celery", "celery"),
            bind("celery.pidbox", "w1.celery.pidbox", ""),
            bind("amq.topic", "other", "x"),
        ];
        let (found, known) = recognise(&queues, &bindings);
        assert_eq!(
            found,
            [
                (RabbitLibrary::Celery, "celery".to_string()),
                (RabbitLibrary::Dramatiq, "embed".to_string())
            ]
        );
        let unknown: Vec<&String> = queues.difference(&known).collect();
        assert_eq!(unknown, ["other"]);
    }

    #[test]
    fn ages_say_what_a_producer_or_the_broker_can_add() {
        for library in [RabbitLibrary::Celery, RabbitLibrary::Dramatiq] {
            let Layout::Unknowable(why) = layout(library, "q", Measure::OldestAgeSeconds) else {
                panic!("{library:?} sets no timestamp");
            };
            assert!(why.contains("set_header_timestamp"), "{why}");
        }
    }
}
