//! Job libraries' Redis layouts, as data: for a library, a queue and a measure, which keys
//! hold the jobs and how the generic reads (`reads`) read them. A preset is only this: it
//! expands into [`RedisTarget`]s, so a library's series are planned, batched, routed (Cluster)
//! and evaluated exactly as the same keys written out by hand would be. The steps a library
//! needs beyond plain keys are generic knobs with a stated bound
//! ([`super::config::MAX_MEMBERS_AGED`]): BullMQ's `prioritized` sorted set, whose order is not
//! enqueue order, is `also`; arq's jobs being run, which stay in its queue marked by a key of
//! their own, are `in_progress`.
//!
//! Each layout was checked against the library's real client and worker (`tests/job_libraries.rs`)
//! and its code; the lines are cited where each library is laid out below.

use super::config::{
    AlsoKey, KeyType, Library, ListEnd, RedisTarget, ScoreUnit, TimeUnit, TimestampSpec,
};
use super::discovery::{Discovery, wildcard_part};
use crate::sources::measure::Measure;

/// The `scope` label of a series about one queue.
pub const SCOPE_QUEUE: &str = "queue";
/// The `scope` (and `queue`) label of a series about a structure the library keeps for all
/// its queues at once (Sidekiq's `schedule`, Celery's `unacked`).
pub const SCOPE_ALL_QUEUES: &str = "all-queues";

/// What one preset series reads: a generic target over exact keys, and the generic measure it
/// is read for (`due` is a sorted set's `ready`, `failed` a key's `length`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct PresetRead {
    /// The keys read.
    pub target: RedisTarget,
    /// The generic measure they are read for.
    pub measure: Measure,
}

/// How a library keeps what a measure counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// In keys of the queue's own: one series per queue.
    PerQueue(Box<PresetRead>),
    /// In structures kept for all queues at once: one series per structure, whatever the
    /// queues named (never re-parsed member by member to split it by queue).
    AllQueues(Vec<PresetRead>),
    /// `drain_seconds` and `workers_needed`: the queue's waiting work (its `length` read)
    /// and its own completions counter and, for `workers_needed`, its arrivals counter.
    Drain {
        /// What `length` reads.
        waiting: Box<PresetRead>,
        /// What `completion_rate` reads.
        completions: Box<PresetRead>,
        /// What `arrival_rate` reads (`workers_needed` only).
        arrivals: Option<Box<PresetRead>>,
    },
    /// Not kept where a reader can see it: every queue's series is this error.
    Unknowable(String),
}

/// Where a library's queues are found for `queue: "*"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registry {
    /// The set the library keeps its queue names in (Sidekiq `queues`, RQ `rq:queues`).
    Set(String),
    /// Sets matching a pattern, each listing queues (kombu's `_kombu.binding.<exchange>`).
    SetsMatching(String),
    /// No registry: a key every queue has, found by `SCAN` (BullMQ `<prefix>:<q>:meta`).
    Marker(String, KeyType),
}

fn list(key: String) -> RedisTarget {
    RedisTarget::exact(KeyType::List, key)
}

fn zset(key: String, unit: ScoreUnit) -> RedisTarget {
    RedisTarget {
        score_unit: Some(unit),
        ..RedisTarget::exact(KeyType::Zset, key)
    }
}

fn read(target: RedisTarget, measure: Measure) -> Layout {
    Layout::PerQueue(Box::new(PresetRead { target, measure }))
}

/// A list whose oldest job's time is at `timestamp`.
fn aged(mut target: RedisTarget, oldest_at: ListEnd, timestamp: TimestampSpec) -> RedisTarget {
    target.oldest_at = Some(oldest_at);
    target.timestamp = Some(timestamp);
    target
}

fn in_element(pointer: &str, unit: TimeUnit) -> TimestampSpec {
    TimestampSpec {
        json_pointer: Some(pointer.to_string()),
        hash: None,
        field: None,
        unit,
    }
}

fn in_hash_per_job(hash: String, field: &str, unit: TimeUnit) -> TimestampSpec {
    TimestampSpec {
        json_pointer: None,
        hash: Some(hash),
        field: Some(field.to_string()),
        unit,
    }
}

fn in_jobs_hash(hash: String, pointer: &str, unit: TimeUnit) -> TimestampSpec {
    TimestampSpec {
        json_pointer: Some(pointer.to_string()),
        hash: Some(hash),
        field: None,
        unit,
    }
}

fn unknowable(text: &str) -> Layout {
    Layout::Unknowable(text.to_string())
}

/// huey's queue name as its storage writes it: only letters, digits and `_` are kept
/// (`huey/storage.py:488-489,519-520`, `clean_name`).
pub fn huey_name(queue: &str) -> String {
    queue
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// kombu's separator inside a priority sub-list's name and a binding set's members.
const KOMBU_SEP: &str = "\x06\x16";

/// Where `library` keeps what `measure` counts for `queue` (`prefix`: the library's key prefix,
/// `""` where it has none).
pub fn layout(library: Library, prefix: &str, queue: &str, measure: Measure) -> Layout {
    use Measure::{
        ArrivalRate, CompletionRate, Delayed, DrainSeconds, Due, Failed, InFlight, Length,
        OldestAgeSeconds, WorkersNeeded,
    };
    match (library, measure) {
        // Sidekiq 6.4 `client.rb:214-229` (LPUSH `queue:<q>`, JSON with `enqueued_at`),
        // `fetch.rb:47` (BRPOP: oldest at the tail); 8.x writes ms (`api.rb:576-582`).
        (Library::Sidekiq, Length) => read(list(format!("queue:{queue}")), Length),
        (Library::Sidekiq, OldestAgeSeconds) => read(
            aged(
                list(format!("queue:{queue}")),
                ListEnd::Tail,
                in_element("/enqueued_at", TimeUnit::Sidekiq),
            ),
            OldestAgeSeconds,
        ),
        (Library::Sidekiq, InFlight) => unknowable(
            "Sidekiq keeps the jobs being run per process (<identity>:work, rewritten every heartbeat), not per queue",
        ),
        // `schedule` and `retry`: sorted sets for all queues, scored by run-at in seconds.
        (Library::Sidekiq, Due) => Layout::AllQueues(vec![
            PresetRead {
                target: zset("schedule".into(), ScoreUnit::S),
                measure: Measure::Ready,
            },
            PresetRead {
                target: zset("retry".into(), ScoreUnit::S),
                measure: Measure::Ready,
            },
        ]),
        (Library::Sidekiq, Failed) => Layout::AllQueues(vec![
            PresetRead {
                target: zset("retry".into(), ScoreUnit::S),
                measure: Length,
            },
            PresetRead {
                target: zset("dead".into(), ScoreUnit::S),
                measure: Length,
            },
        ]),
        // RQ 3.0 `queue.py` (RPUSH ids to `rq:queue:<q>`), `job.py` (`rq:job:<id>` field
        // `enqueued_at`, `%Y-%m-%dT%H:%M:%S.%fZ`), `registry.py:266` (`rq:wip:<q>`, started),
        // scheduled and failed registries scored in seconds.
        (Library::Rq, Length) => read(list(format!("rq:queue:{queue}")), Length),
        (Library::Rq, OldestAgeSeconds) => read(
            aged(
                list(format!("rq:queue:{queue}")),
                ListEnd::Head,
                in_hash_per_job("rq:job:{id}".into(), "enqueued_at", TimeUnit::Rfc3339),
            ),
            OldestAgeSeconds,
        ),
        (Library::Rq, InFlight) => read(zset(format!("rq:wip:{queue}"), ScoreUnit::S), Length),
        (Library::Rq, Due) => read(
            zset(format!("rq:scheduled:{queue}"), ScoreUnit::S),
            Measure::Ready,
        ),
        (Library::Rq, Failed) => read(zset(format!("rq:failed:{queue}"), ScoreUnit::S), Length),
        // kombu 5.7 `transport/redis.py`: LPUSH to `<q>` or, for priority ≥ 3 (default steps
        // [0, 3, 6, 9]), to `<q>\x06\x16<step>`; prefetched and ETA tasks go to the global
        // `unacked` hash.
        (Library::Celery, Length) => {
            let mut target = list(queue.to_string());
            target.kombu_priority_steps = Some(vec![3, 6, 9]);
            read(target, Length)
        }
        (Library::Celery, OldestAgeSeconds) => unknowable(
            "Celery records no enqueue time in a task message; a producer can add one in a before_task_publish signal handler (a header such as enqueued_at in epoch ms), then read it with the generic block: {type: list, key: <queue>, kombu_priority_steps: [3, 6, 9], timestamp: {json_pointer: /headers/enqueued_at, unit: ms}}",
        ),
        (Library::Celery, InFlight) => Layout::AllQueues(vec![PresetRead {
            target: RedisTarget::exact(KeyType::Hash, "unacked"),
            measure: Length,
        }]),
        (Library::Celery, Due) => unknowable(
            "Celery keeps a task with an ETA or countdown in a worker, among the unacked tasks of all queues (in_flight), not in a schedule a reader can count",
        ),
        (Library::Celery, Failed) => unknowable(
            "Celery keeps no failed tasks in the broker (a result backend records outcomes)",
        ),
        // dramatiq 2.2 `brokers/redis/dispatch.lua`: RPUSH ids to `<ns>:<q>`, each message's
        // JSON (`message_timestamp`, ms) in the hash `<ns>:<q>.msgs`; dead letters in the
        // sorted set `<ns>:<q>.XQ` (scored in ms).
        (Library::Dramatiq, Length) => read(list(format!("{prefix}:{queue}")), Length),
        (Library::Dramatiq, OldestAgeSeconds) => read(
            aged(
                list(format!("{prefix}:{queue}")),
                ListEnd::Head,
                in_jobs_hash("{key}.msgs".into(), "/message_timestamp", TimeUnit::Ms),
            ),
            OldestAgeSeconds,
        ),
        (Library::Dramatiq, InFlight) => unknowable(
            "dramatiq keeps the messages a worker holds in one set per worker (<ns>:__acks__.<worker>.<queue>), found only by scanning every key",
        ),
        (Library::Dramatiq, Due) => unknowable(
            "dramatiq keeps delayed messages in <queue>.DQ, due or not, and a message's eta is inside its JSON: telling the due ones apart means reading every one",
        ),
        (Library::Dramatiq, Failed) => {
            read(zset(format!("{prefix}:{queue}.XQ"), ScoreUnit::Ms), Length)
        }
        // arq 0.28 `connections.py:161-175`: one sorted set per queue (its name is the key),
        // member = job id, score = enqueue time in ms (later for a deferred job). A job being
        // run stays in it until it finishes, marked by `arq:in-progress:<id>`
        // (`worker.py:450-465`, `constants.py`): such jobs are not waiting.
        (Library::Arq, Length) => read(arq_queue(queue), Measure::Ready),
        (Library::Arq, OldestAgeSeconds) => read(arq_queue(queue), OldestAgeSeconds),
        (Library::Arq, InFlight) => read(arq_queue(queue), InFlight),
        (Library::Arq, Due) => unknowable(
            "arq keeps deferred jobs in the queue's own sorted set: the due ones are counted in length",
        ),
        (Library::Arq, Failed) => {
            unknowable("arq keeps outcomes per job (arq:result:<id>), not a failed set per queue")
        }
        // huey 3.5 `storage.py:488-556`: LPUSH pickled tasks to `huey.redis.<name>`.
        (Library::Huey, Length) => read(list(format!("huey.redis.{}", huey_name(queue))), Length),
        (Library::Huey, OldestAgeSeconds) => unknowable(
            "huey's Redis storage keeps each task pickled, with no enqueue time; nothing a producer adds is readable outside Python: record the time in a key of your own and read it with the generic knobs",
        ),
        (Library::Huey, InFlight) => {
            unknowable("huey keeps the tasks being run in the consumer's memory")
        }
        (Library::Huey, Due) => unknowable(
            "huey scores its schedule (huey.schedule.<name>) in the consumer's local time, which Redis cannot tell",
        ),
        (Library::Huey, Failed) => unknowable("huey keeps no failed tasks in Redis"),
        // BullMQ ≥ 5 `addStandardJob` (LPUSH `<p>:<q>:wait`), `addPrioritizedJob`
        // (`:prioritized`, score priority×2³² + counter), 5.x pause (RENAME to `:paused`; 6.x
        // keeps `wait`), `moveToActive` (`:active`), delayed scores ms×4096 + n, `:failed`.
        // Each job's hash `<p>:<q>:<id>` has `timestamp` (ms).
        (Library::Bullmq, Length) => read(bullmq_waiting(prefix, queue), Length),
        (Library::Bullmq, OldestAgeSeconds) => {
            let target = aged(
                bullmq_waiting(prefix, queue),
                ListEnd::Tail,
                in_hash_per_job(
                    format!("{prefix}:{queue}:{{id}}"),
                    "timestamp",
                    TimeUnit::Ms,
                ),
            );
            read(target, OldestAgeSeconds)
        }
        (Library::Bullmq, InFlight) => read(list(format!("{prefix}:{queue}:active")), Length),
        (Library::Bullmq, Due) => read(
            zset(format!("{prefix}:{queue}:delayed"), ScoreUnit::Bullmq),
            Measure::Ready,
        ),
        (Library::Bullmq, Failed) => read(
            zset(format!("{prefix}:{queue}:failed"), ScoreUnit::Ms),
            Length,
        ),
        // bee-queue 2.0 `lib/lua/addJob.lua` (LPUSH `<p>:<q>:waiting`, JSON in the hash
        // `<p>:<q>:jobs` with `options.timestamp` ms), `:active` list, `:delayed` sorted set
        // scored by run-at ms, `:failed` set.
        (Library::BeeQueue, Length) => read(list(format!("{prefix}:{queue}:waiting")), Length),
        (Library::BeeQueue, OldestAgeSeconds) => read(
            aged(
                list(format!("{prefix}:{queue}:waiting")),
                ListEnd::Tail,
                in_jobs_hash(
                    format!("{prefix}:{queue}:jobs"),
                    "/options/timestamp",
                    TimeUnit::Ms,
                ),
            ),
            OldestAgeSeconds,
        ),
        (Library::BeeQueue, InFlight) => read(list(format!("{prefix}:{queue}:active")), Length),
        (Library::BeeQueue, Due) => read(
            zset(format!("{prefix}:{queue}:delayed"), ScoreUnit::Ms),
            Measure::Ready,
        ),
        (Library::BeeQueue, Failed) => read(
            RedisTarget::exact(KeyType::Set, format!("{prefix}:{queue}:failed")),
            Length,
        ),
        // Delayed or scheduled jobs, due or not.
        (Library::Sidekiq, Delayed) => Layout::AllQueues(vec![PresetRead {
            target: zset("schedule".into(), ScoreUnit::S),
            measure: Length,
        }]),
        (Library::Rq, Delayed) => read(zset(format!("rq:scheduled:{queue}"), ScoreUnit::S), Length),
        (Library::Celery, Delayed) => unknowable(
            "Celery keeps a task with an ETA or countdown in a worker, among the unacked tasks of all queues (in_flight)",
        ),
        // `dispatch.lua`: a delayed message waits in the list `<ns>:<q>.DQ` until a worker
        // takes it and holds it to its eta.
        (Library::Dramatiq, Delayed) => read(list(format!("{prefix}:{queue}.DQ")), Length),
        (Library::Arq, Delayed) => unknowable(
            "arq keeps deferred jobs in the queue's own sorted set, not apart: those due are in length",
        ),
        // The count is right whatever the clock its scores were written in.
        (Library::Huey, Delayed) => read(
            zset(format!("huey.schedule.{}", huey_name(queue)), ScoreUnit::S),
            Length,
        ),
        (Library::Bullmq, Delayed) => read(
            zset(format!("{prefix}:{queue}:delayed"), ScoreUnit::Bullmq),
            Length,
        ),
        (Library::BeeQueue, Delayed) => read(
            zset(format!("{prefix}:{queue}:delayed"), ScoreUnit::Ms),
            Length,
        ),
        // Counters (arrivals and completions).
        (Library::Sidekiq, ArrivalRate) => unknowable(
            "Sidekiq counts no enqueues (stat:processed and stat:failed count jobs run, for all queues)",
        ),
        // `launcher.rb` (`❤`): each process adds the jobs it ran since its last heartbeat to
        // `stat:processed` (failures included; failures also to `stat:failed`) every 5 s
        // (6.x) or 10 s (7.0+): a window of 30 s or more holds several flushes.
        (Library::Sidekiq, CompletionRate) => Layout::AllQueues(vec![PresetRead {
            target: RedisTarget::exact(KeyType::String, "stat:processed"),
            measure: CompletionRate,
        }]),
        (Library::Rq, ArrivalRate | CompletionRate) => unknowable(
            "RQ counts finished jobs per worker (rq:worker:<name> successful_job_count, failed_job_count), and a worker's counts vanish when it stops, so their sum is no counter; it counts no enqueues",
        ),
        (Library::Celery, ArrivalRate | CompletionRate) => unknowable(
            "Celery keeps no counters in Redis (events or a result backend record outcomes)",
        ),
        (Library::Dramatiq, ArrivalRate | CompletionRate) => {
            unknowable("dramatiq keeps no counters in Redis")
        }
        (Library::Arq, ArrivalRate | CompletionRate) => unknowable(
            "arq writes its counts per worker into arq:queue:health-check (j_complete=...), each worker overwriting the others': not a count of the queue",
        ),
        (Library::Huey, ArrivalRate | CompletionRate) => {
            unknowable("huey keeps no counters in Redis")
        }
        // `addStandardJob`/`addPrioritizedJob`/`addDelayedJob`: `INCR <p>:<q>:id` at every
        // add, before a duplicate custom id is turned away (so duplicates count as arrivals).
        (Library::Bullmq, ArrivalRate) => read(
            RedisTarget::exact(KeyType::String, format!("{prefix}:{queue}:id")),
            ArrivalRate,
        ),
        // `moveToFinished` → `collectMetrics`: `HINCRBY <p>:<q>:metrics:<completed|failed>
        // count 1` at every finish, only where workers set `metrics: {maxDataPoints}`.
        (Library::Bullmq, CompletionRate) => read(
            RedisTarget {
                field: Some("count".into()),
                also: vec![AlsoKey {
                    key_type: KeyType::Hash,
                    key: format!("{prefix}:{queue}:metrics:failed"),
                }],
                ..RedisTarget::exact(KeyType::Hash, format!("{prefix}:{queue}:metrics:completed"))
            },
            CompletionRate,
        ),
        (Library::BeeQueue, ArrivalRate) => unknowable(
            "bee-queue increments <prefix>:<queue>:id only for a job without a custom id, so it can count short",
        ),
        (Library::BeeQueue, CompletionRate) => unknowable(
            "bee-queue keeps finished jobs in sets (succeeded, failed) that removeOnSuccess and removeOnFailure empty: sizes, not counters",
        ),
        (_, DrainSeconds | WorkersNeeded) => {
            let arrivals = match (measure, layout(library, prefix, queue, ArrivalRate)) {
                (DrainSeconds, _) => None,
                (_, Layout::PerQueue(arrivals)) => Some(arrivals),
                (_, Layout::Unknowable(why)) => {
                    return Layout::Unknowable(format!(
                        "no arrival rate, so no replicas that keep up with it: {why}"
                    ));
                }
                (_, other) => {
                    return Layout::Unknowable(format!(
                        "no arrival rate of this queue alone ({other:?})"
                    ));
                }
            };
            let waiting = layout(library, prefix, queue, Length);
            match (waiting, layout(library, prefix, queue, CompletionRate)) {
                (Layout::PerQueue(waiting), Layout::PerQueue(completions)) => Layout::Drain {
                    waiting,
                    completions,
                    arrivals,
                },
                (_, Layout::Unknowable(why)) => {
                    Layout::Unknowable(format!("no completion rate, so no throughput: {why}"))
                }
                (_, Layout::AllQueues(_)) => unknowable(
                    "the library counts finished jobs for all its queues together, so no one queue's completion rate, drain time or throughput can be told (completion_rate serves the count for all queues)",
                ),
                (waiting, _) => {
                    Layout::Unknowable(format!("no waiting work per queue to drain ({waiting:?})"))
                }
            }
        }
        (_, other) => Layout::Unknowable(format!(
            "measure {other} does not apply to a job library's queue"
        )),
    }
}

/// An arq queue: its sorted set, scored in ms, whose members being run have an in-progress key.
fn arq_queue(queue: &str) -> RedisTarget {
    RedisTarget {
        in_progress: Some("arq:in-progress:{id}".into()),
        ..zset(queue.to_string(), ScoreUnit::Ms)
    }
}

/// BullMQ's waiting jobs: the `wait` list, the `prioritized` sorted set and, on 5.x while the
/// queue is paused, the `paused` list (6.x never writes it, so it reads as empty there).
fn bullmq_waiting(prefix: &str, queue: &str) -> RedisTarget {
    let mut target = list(format!("{prefix}:{queue}:wait"));
    target.also = vec![
        AlsoKey {
            key_type: KeyType::Zset,
            key: format!("{prefix}:{queue}:prioritized"),
        },
        AlsoKey {
            key_type: KeyType::List,
            key: format!("{prefix}:{queue}:paused"),
        },
    ];
    target
}

/// Where `library`'s queues are found for `queue: "*"`.
pub fn registry(library: Library, prefix: &str) -> Registry {
    match library {
        Library::Sidekiq => Registry::Set("queues".into()),
        Library::Rq => Registry::Set("rq:queues".into()),
        Library::Celery => Registry::SetsMatching("_kombu.binding.*".into()),
        Library::Dramatiq => Registry::Marker(format!("{prefix}:*.msgs"), KeyType::Hash),
        // The default name and its variants; a queue named otherwise is named in the config.
        Library::Arq => Registry::Marker("arq:queue*".into(), KeyType::Zset),
        Library::Huey => Registry::Marker("huey.redis.*".into(), KeyType::List),
        Library::Bullmq => Registry::Marker(format!("{prefix}:*:meta"), KeyType::Hash),
        Library::BeeQueue => Registry::Marker(format!("{prefix}:*:jobs"), KeyType::Hash),
    }
}

/// The literal start every queue key of `library` shares, watched (as a prefix) for `*` so that
/// a job pushed to any of its queues wakes a poll; `None` where queue keys share none (Celery's
/// are the queue names themselves).
pub fn key_prefix(library: Library, prefix: &str) -> Option<String> {
    match library {
        Library::Sidekiq => Some("queue:".into()),
        Library::Rq => Some("rq:queue:".into()),
        Library::Celery => None,
        Library::Arq => Some("arq:queue".into()),
        Library::Huey => Some("huey.redis.".into()),
        Library::Dramatiq | Library::Bullmq | Library::BeeQueue => Some(format!("{prefix}:")),
    }
}

/// Whether `key` is one of `library`'s own keys, given the `queues` found: for `discover`'s
/// count of the keys no library found explains. Broad on purpose (any key under the library's
/// prefix), since job hashes, results and statistics are the library's too.
pub fn owns(library: Library, prefix: &str, queues: &[String], key: &str) -> bool {
    let under = |p: &str| key.starts_with(p);
    match library {
        Library::Sidekiq => {
            ["queues", "schedule", "retry", "dead", "processes"].contains(&key)
                || under("queue:")
                || under("stat:")
        }
        Library::Rq => under("rq:"),
        Library::Celery => {
            ["unacked", "unacked_index", "unacked_mutex"].contains(&key)
                || under("_kombu.")
                || under("celery-task-meta-")
                || queues
                    .iter()
                    .any(|q| key == q || key.starts_with(&format!("{q}{KOMBU_SEP}")))
        }
        Library::Arq => under("arq:"),
        Library::Huey => under("huey."),
        Library::Dramatiq | Library::Bullmq | Library::BeeQueue => under(&format!("{prefix}:")),
    }
}

/// The queues of `library` that `discovery` found, sorted.
pub fn found_queues(library: Library, prefix: &str, discovery: &Discovery) -> Vec<String> {
    let mut queues: Vec<String> = match registry(library, prefix) {
        Registry::Set(key) => discovery
            .members(&key)
            .iter()
            .map(|m| match library {
                // RQ lists its queues' keys.
                Library::Rq => m.strip_prefix("rq:queue:").unwrap_or(m).to_string(),
                _ => m.clone(),
            })
            .collect(),
        Registry::SetsMatching(pattern) => discovery
            .keys(&pattern, KeyType::Set)
            .iter()
            .flat_map(|set| discovery.members(set))
            // `<routing key>\x06\x16<pattern>\x06\x16<queue>` (kombu `_queue_bind`).
            .filter_map(|m| m.rsplit(KOMBU_SEP).next().map(str::to_string))
            // Celery's own reply and event queues are not work queues.
            .filter(|q| !q.is_empty() && !q.ends_with(".pidbox") && !q.starts_with("celeryev."))
            .collect(),
        Registry::Marker(pattern, key_type) => discovery
            .keys(&pattern, key_type)
            .iter()
            .filter_map(|key| match library {
                Library::Arq => Some(key.clone()),
                // `<ns>:<q>.DQ.msgs` and `.XQ.msgs` belong to the queue `<q>`.
                Library::Dramatiq => {
                    let q = wildcard_part(&pattern, key);
                    (!q.ends_with(".DQ") && !q.ends_with(".XQ")).then_some(q)
                }
                _ => Some(wildcard_part(&pattern, key)),
            })
            .collect(),
    };
    queues.sort();
    queues.dedup();
    queues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bullmq_waiting_work_is_the_wait_list_prioritized_set_and_paused_list() {
        let Layout::PerQueue(r) = layout(Library::Bullmq, "bull", "embed", Measure::Length) else {
            panic!("per queue");
        };
        assert_eq!(r.target.key.as_deref(), Some("bull:embed:wait"));
        let also: Vec<(KeyType, &str)> = r
            .target
            .also
            .iter()
            .map(|a| (a.key_type, a.key.as_str()))
            .collect();
        assert_eq!(
            also,
            [
                (KeyType::Zset, "bull:embed:prioritized"),
                (KeyType::List, "bull:embed:paused")
            ]
        );
    }

    #[test]
    fn every_library_answers_every_preset_measure_with_keys_or_a_reason() {
        use crate::sources::measure::JOB_LIBRARY_MEASURES;
        for library in [
            Library::Sidekiq,
            Library::Rq,
            Library::Celery,
            Library::Dramatiq,
            Library::Arq,
            Library::Huey,
            Library::Bullmq,
            Library::BeeQueue,
        ] {
            let prefix = library.default_prefix().unwrap_or("");
            let length = layout(library, prefix, "embed", Measure::Length);
            assert!(
                matches!(length, Layout::PerQueue(_)),
                "{library:?}: waiting work is per queue"
            );
            for measure in JOB_LIBRARY_MEASURES {
                match layout(library, prefix, "embed", *measure) {
                    Layout::PerQueue(r) => {
                        let at = format!("{library:?} {measure}");
                        r.target
                            .validate(&at, r.measure, &Default::default())
                            .unwrap_or_else(|e| panic!("{at}: {e}"));
                    }
                    Layout::AllQueues(reads) => assert!(!reads.is_empty()),
                    Layout::Drain {
                        waiting,
                        completions,
                        arrivals,
                    } => {
                        if let Some(arrivals) = arrivals {
                            assert_eq!(arrivals.measure, Measure::ArrivalRate, "{library:?}");
                        }
                        let at = format!("{library:?} {measure}");
                        assert_eq!(completions.measure, Measure::CompletionRate, "{at}");
                        completions
                            .target
                            .validate(&at, completions.measure, &Default::default())
                            .unwrap_or_else(|e| panic!("{at}: {e}"));
                        assert_eq!(
                            Layout::PerQueue(waiting),
                            layout(library, prefix, "embed", Measure::Length),
                            "{at}: what drains is what waits"
                        );
                    }
                    Layout::Unknowable(why) => assert!(why.len() > 20, "{why}"),
                }
            }
        }
    }

    #[test]
    fn ages_that_cannot_be_known_say_what_a_producer_can_add() {
        let Layout::Unknowable(why) =
            layout(Library::Celery, "", "embed", Measure::OldestAgeSeconds)
        else {
            panic!("Celery records no time");
        };
        assert!(why.contains("before_task_publish"), "{why}");
        assert!(matches!(
            layout(Library::Huey, "", "embed", Measure::OldestAgeSeconds),
            Layout::Unknowable(_)
        ));
    }

    #[test]
    fn every_queue_is_found_where_each_library_lists_it() {
        let d = Discovery::found(
            vec![
                (
                    ("dramatiq:*.msgs", KeyType::Hash),
                    vec![
                        "dramatiq:embed.msgs",
                        "dramatiq:embed.DQ.msgs",
                        "dramatiq:embed.XQ.msgs",
                    ],
                ),
                (
                    ("_kombu.binding.*", KeyType::Set),
                    vec!["_kombu.binding.celery", "_kombu.binding.celery.pidbox"],
                ),
                (
                    ("bull:*:meta", KeyType::Hash),
                    vec!["bull:embed:meta", "bull:a:b:meta"],
                ),
                (
                    ("arq:queue*", KeyType::Zset),
                    vec!["arq:queue", "arq:queue:low"],
                ),
            ],
            vec![
                ("queues", vec!["embed", "default"]),
                ("rq:queues", vec!["rq:queue:embed", "rq:queue:high"]),
                (
                    "_kombu.binding.celery",
                    vec!["embed\x06\x16\x06\x16embed", "celery\x06\x16\x06\x16celery"],
                ),
                (
                    "_kombu.binding.celery.pidbox",
                    vec!["\x06\x16\x06\x16abc.reply.celery.pidbox"],
                ),
            ],
        );
        let found = |library, prefix| found_queues(library, prefix, &d);
        assert_eq!(found(Library::Sidekiq, ""), ["default", "embed"]);
        assert_eq!(found(Library::Rq, ""), ["embed", "high"]);
        assert_eq!(found(Library::Celery, ""), ["celery", "embed"]);
        assert_eq!(
            found(Library::Dramatiq, "dramatiq"),
            ["embed"],
            "not its DQ and XQ"
        );
        assert_eq!(found(Library::Bullmq, "bull"), ["a:b", "embed"]);
        assert_eq!(found(Library::Arq, ""), ["arq:queue", "arq:queue:low"]);
        assert!(found(Library::Huey, "").is_empty());
    }

    #[test]
    fn huey_names_keep_letters_digits_and_underscores() {
        assert_eq!(huey_name("my-app.v2"), "myappv2");
        assert_eq!(huey_name("embed_1"), "embed_1");
    }
}
