//! Job libraries' RabbitMQ layouts, as data: for a library, its queue and a measure, which
//! RabbitMQ queue holds what the measure counts and which of its counts it is. Like the Redis
//! presets (`sources::redis::libraries`), a preset only chooses what the generic reads read.
//!
//! Checked against the libraries' code (`../shared/reference/job-libraries.md` §2) and their
//! real clients and workers (`tests/job_libraries.rs`).

use super::config::RabbitLibrary;
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
        Delayed, Due, Failed, InFlight, Length, OldestAgeSeconds, Ready, Total, Unacked,
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
        (_, other) => Layout::Unknowable(format!(
            "measure {other} does not apply to a job library's queue"
        )),
    }
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
                let waiting = matches!(measure, Measure::Length | Measure::InFlight);
                assert_eq!(queue == "embed", waiting, "{measure}: {queue}");
            }
        }
        assert_eq!(
            layout(RabbitLibrary::Dramatiq, "embed", Measure::Failed),
            queue("embed.XQ".into(), Measure::Total)
        );
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
