//! What each series reads from Redis and how its value follows from the replies.
//!
//! A poll is at most two pipelined round trips. Round one holds `TIME` and every command that
//! needs nothing but the key; round two holds the lookups that need a round-one answer (the hash an
//! RQ/BullMQ element names, the first undelivered stream entry, `ZCOUNT` up to the server's
//! `now`). Identical commands are sent once ([`Batch`]), so metrics reading the same key share
//! their commands. Every command here is a read.

use redis::Value;

use super::batch::Batch;
use std::sync::Arc;

use super::config::{KeyType, ListEnd, MAX_MEMBERS_AGED, RedisTarget, ScoreUnit, TimestampSpec};
use super::reply;
use super::timestamp;
use crate::model::SeriesError;
use crate::sources::measure::Measure;

/// kombu's separator between a queue name and its priority step (`kombu/transport/redis.py`).
const KOMBU_PRIORITY_SEP: &str = "\x06\x16";

/// What one series reads: its target, measure and key. Cheap; made per evaluation.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRead<'a> {
    /// What the metric reads.
    pub target: &'a RedisTarget,
    /// What it computes.
    pub measure: Measure,
    /// The key of this series.
    pub key: &'a str,
    /// The database the key is read in, for messages about a missing key.
    pub db: i64,
}

/// A series' round-one commands (reply indices into the round-one batch). Depends only on the
/// key and target, so it is planned once per set of keys and reused by every poll.
#[derive(Debug, Clone)]
pub enum Planned {
    /// Sum of integer replies (lengths, including kombu sub-lists).
    Sum(Parts),
    /// `LINDEX` of the oldest end of each list read.
    ListOldest(Parts),
    /// `TYPE` and `XLEN`: a missing stream is an error, which `XLEN` alone would call 0.
    StreamLength {
        /// `TYPE key`.
        type_idx: usize,
        /// `XLEN key`.
        len_idx: usize,
    },
    /// `TYPE` and `XINFO STREAM`: the stream's `entries-added` counter (Redis 7.0+).
    StreamAdded {
        /// `TYPE key`.
        type_idx: usize,
        /// `XINFO STREAM key`.
        info_idx: usize,
    },
    /// Counters (`GET`, or `HGET` of the configured field), summed: a rate's reading.
    Counter(Parts),
    /// `TYPE`, `XINFO GROUPS` and, for ages, the `XPENDING` summary.
    StreamGroup {
        /// `TYPE key`.
        type_idx: usize,
        /// `XINFO GROUPS key`.
        groups_idx: usize,
        /// `XPENDING key group`, for the ages.
        pending_idx: Option<usize>,
    },
    /// `ZRANGE key 0 0 WITHSCORES`.
    ZsetOldest(usize),
    /// `ZCARD` in round one; where it is not 0, `ZCOUNT` to the server's now in round two.
    ZsetReady(usize),
    /// A sorted set whose members may be being run (`in_progress`): `ZCARD` and its lowest
    /// [`MAX_MEMBERS_AGED`] members with scores; in round two, whether each is being run.
    ZsetRunning {
        /// `ZCARD key`.
        card: usize,
        /// `ZRANGE key 0 N-1 WITHSCORES`.
        range: usize,
    },
    /// Nothing: the measure does not apply to the key type (config validation refuses such a
    /// metric, so this is only ever seen by a caller that skipped it).
    Inapplicable,
    /// Nothing: a job library does not keep what the measure counts; every poll answers this
    /// error, which says why and what would make it knowable.
    Unknowable(Arc<str>),
}

/// The measures a Redis key can be read for, out of every kind's [`Measure`]s: what
/// [`SeriesRead::plan`] matches on, with every pair of key type and read written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedisRead {
    Length,
    OldestAge,
    Lag,
    Pending,
    OldestPendingAge,
    OldestUnprocessedAge,
    Ready,
    InFlight,
    /// A counter of jobs that entered (`arrival_rate`).
    Arrivals,
    /// A counter of jobs that finished (`completion_rate`, and `drain_seconds`' rate).
    Completions,
    /// The work waiting, for `drain_seconds`: a stream group's undelivered and pending
    /// entries, a list's or sorted set's length.
    Backlog,
}

impl RedisRead {
    /// The Redis read of `measure`; `None` for the measures of other kinds.
    fn of(measure: Measure) -> Option<RedisRead> {
        match measure {
            Measure::Length => Some(RedisRead::Length),
            Measure::OldestAgeSeconds => Some(RedisRead::OldestAge),
            Measure::Lag => Some(RedisRead::Lag),
            Measure::Pending => Some(RedisRead::Pending),
            Measure::OldestPendingAgeSeconds => Some(RedisRead::OldestPendingAge),
            Measure::OldestUnprocessedAgeSeconds => Some(RedisRead::OldestUnprocessedAge),
            Measure::Ready => Some(RedisRead::Ready),
            Measure::InFlight => Some(RedisRead::InFlight),
            Measure::ArrivalRate => Some(RedisRead::Arrivals),
            Measure::CompletionRate => Some(RedisRead::Completions),
            Measure::DrainSeconds | Measure::WorkersNeeded => Some(RedisRead::Backlog),
            Measure::Unacked
            | Measure::Total
            | Measure::Consumers
            | Measure::PublishRate
            | Measure::DeliverRate
            | Measure::AckRate
            | Measure::GpuUtilization
            | Measure::MemoryUsedRatio
            | Measure::PowerWatts
            | Measure::WaitingRequests
            | Measure::RunningRequests
            | Measure::KvCacheUsageRatio
            | Measure::QueueTimeSeconds
            | Measure::Value
            | Measure::Rate
            | Measure::AckPending
            | Measure::Redelivered
            | Measure::WaitingPulls
            // A job library's measures are read through the generic ones its preset names.
            | Measure::Due
            | Measure::Delayed
            | Measure::Failed => None,
        }
    }
}

/// The keys a length or list-age series reads, each with its command's reply index: the
/// series' own key alone, unless kombu priority sub-lists or `also` keys are configured. Kept
/// per series for every poll, so the usual case holds no copy of the key.
#[derive(Debug, Clone)]
pub enum Parts {
    /// The series' own key.
    Own(usize),
    /// The series' key, its kombu sub-lists and its `also` keys.
    Keys(Box<[Part]>),
}

/// One key of a queue kept across several.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its command's reply index.
    idx: usize,
    key: String,
    /// A list, or a sorted set of job ids (`also`); a counter's more counters.
    key_type: KeyType,
}

impl Parts {
    /// Each key read (`own` is the series' key, of type `own_type`) with its reply index.
    fn each<'a>(
        &'a self,
        own: &'a str,
        own_type: KeyType,
    ) -> impl Iterator<Item = (usize, &'a str, KeyType)> + 'a {
        let (one, many) = match self {
            Parts::Own(i) => (Some((*i, own, own_type)), &[][..]),
            Parts::Keys(keys) => (None, &keys[..]),
        };
        one.into_iter()
            .chain(many.iter().map(|p| (p.idx, p.key.as_str(), p.key_type)))
    }
}

/// One round-two `HGET` of an oldest element's time.
#[derive(Debug)]
pub struct HashLookup {
    /// The reply's index in round two.
    idx: usize,
    /// The hash read.
    hash: String,
    /// The field read when it is the element itself (a hash keeping each element's JSON);
    /// `None`: the configured `timestamp.field`.
    element: Option<String>,
}

/// A series after round one: its value, or the round-two lookup it waits for.
#[derive(Debug)]
pub enum Pending {
    /// Finished.
    Done(Result<f64, SeriesError>),
    /// `HGET`s of the oldest elements' times (in the hashes they name, or their JSON in the
    /// hash that keeps it); the oldest time wins.
    HashTimes(Vec<HashLookup>),
    /// `XRANGE key (last-delivered + COUNT 1`.
    StreamFirstAfter(usize),
    /// `ZCOUNT key -inf now`.
    ZsetCount(usize),
    /// `EXISTS` of each member's in-progress key: how many are being run.
    Running(Vec<usize>),
    /// `ZCOUNT key -inf now`, less the due members being run (`EXISTS` each).
    ReadyLessRunning {
        /// `ZCOUNT`.
        count: usize,
        /// `EXISTS` of each due member's in-progress key.
        running: Vec<usize>,
    },
    /// The due members in score order, each with its in-progress `EXISTS`: the first not
    /// being run is the oldest waiting.
    OldestNotRunning {
        /// Each due member's time (ms) and `EXISTS` index.
        due: Vec<(f64, usize)>,
        /// Whether the range read was full, so that more due members may follow.
        truncated: bool,
    },
}

impl SeriesRead<'_> {
    /// Plans the round-one commands of this series into `batch`. Every (key type, measure)
    /// pair is written out, so a new measure is a compile error here until it has its read; a
    /// pair the config refuses (a list has no `lag`) plans nothing and reads as an error.
    pub fn plan(&self, batch: &mut Batch) -> Planned {
        let key = self.key;
        let k = key.as_bytes();
        let Some(read) = RedisRead::of(self.measure) else {
            return Planned::Inapplicable;
        };
        // What waits in a list or sorted set is its length; a stream's is the group's own.
        let read = match (self.target.key_type, read) {
            (KeyType::List | KeyType::Zset, RedisRead::Backlog) => RedisRead::Length,
            _ => read,
        };
        match (self.target.key_type, read) {
            (KeyType::List, RedisRead::Length) => {
                Planned::Sum(self.list_parts(|lk, ty| match ty {
                    KeyType::Zset => batch.add(&[b"ZCARD", lk]),
                    _ => batch.add(&[b"LLEN", lk]),
                }))
            }
            (KeyType::List, RedisRead::OldestAge) => {
                let index: &[u8] = match self.target.oldest_at.unwrap_or(ListEnd::Tail) {
                    ListEnd::Head => b"0",
                    ListEnd::Tail => b"-1",
                };
                // A sorted set's order is not enqueue order: all its members (one more than
                // the bound, to tell a larger set).
                let last = MAX_MEMBERS_AGED.to_string();
                Planned::ListOldest(self.list_parts(|lk, ty| match ty {
                    KeyType::Zset => batch.add(&[b"ZRANGE", lk, b"0", last.as_bytes()]),
                    _ => batch.add(&[b"LINDEX", lk, index]),
                }))
            }
            (KeyType::Hash, RedisRead::Length) => {
                Planned::Sum(Parts::Own(batch.add(&[b"HLEN", k])))
            }
            (KeyType::Set, RedisRead::Length) => {
                Planned::Sum(Parts::Own(batch.add(&[b"SCARD", k])))
            }
            (KeyType::String, RedisRead::Arrivals | RedisRead::Completions) => {
                Planned::Counter(self.counter_parts(|ck| batch.add(&[b"GET", ck])))
            }
            (KeyType::Hash, RedisRead::Arrivals | RedisRead::Completions) => {
                let field = self.target.field.as_deref().unwrap_or_default().as_bytes();
                Planned::Counter(self.counter_parts(|ck| batch.add(&[b"HGET", ck, field])))
            }
            (KeyType::Stream, RedisRead::Arrivals) => Planned::StreamAdded {
                type_idx: batch.add(&[b"TYPE", k]),
                info_idx: batch.add(&[b"XINFO", b"STREAM", k]),
            },
            (KeyType::Stream, RedisRead::Length) => Planned::StreamLength {
                type_idx: batch.add(&[b"TYPE", k]),
                len_idx: batch.add(&[b"XLEN", k]),
            },
            (
                KeyType::Stream,
                RedisRead::Lag
                | RedisRead::Pending
                | RedisRead::OldestPendingAge
                | RedisRead::OldestUnprocessedAge
                | RedisRead::Completions
                | RedisRead::Backlog,
            ) => {
                let group = self.target.group.as_deref().unwrap_or_default().as_bytes();
                let pending_idx = matches!(
                    read,
                    RedisRead::OldestPendingAge | RedisRead::OldestUnprocessedAge
                )
                .then(|| batch.add(&[b"XPENDING", k, group]));
                Planned::StreamGroup {
                    type_idx: batch.add(&[b"TYPE", k]),
                    groups_idx: batch.add(&[b"XINFO", b"GROUPS", k]),
                    pending_idx,
                }
            }
            (KeyType::Zset, RedisRead::Length) => {
                Planned::Sum(Parts::Own(batch.add(&[b"ZCARD", k])))
            }
            (KeyType::Zset, RedisRead::Ready | RedisRead::OldestAge | RedisRead::InFlight)
                if self.target.in_progress.is_some() =>
            {
                let last = (MAX_MEMBERS_AGED - 1).to_string();
                Planned::ZsetRunning {
                    card: batch.add(&[b"ZCARD", k]),
                    range: batch.add(&[b"ZRANGE", k, b"0", last.as_bytes(), b"WITHSCORES"]),
                }
            }
            (KeyType::Zset, RedisRead::Ready) => Planned::ZsetReady(batch.add(&[b"ZCARD", k])),
            (KeyType::Zset, RedisRead::OldestAge) => {
                Planned::ZsetOldest(batch.add(&[b"ZRANGE", k, b"0", b"0", b"WITHSCORES"]))
            }
            (
                KeyType::List,
                RedisRead::Lag
                | RedisRead::Pending
                | RedisRead::OldestPendingAge
                | RedisRead::OldestUnprocessedAge
                | RedisRead::Ready
                | RedisRead::InFlight
                | RedisRead::Arrivals
                | RedisRead::Completions,
            )
            | (KeyType::Stream, RedisRead::OldestAge | RedisRead::Ready | RedisRead::InFlight)
            | (
                KeyType::Zset,
                RedisRead::Lag
                | RedisRead::Pending
                | RedisRead::OldestPendingAge
                | RedisRead::OldestUnprocessedAge
                | RedisRead::InFlight
                | RedisRead::Arrivals
                | RedisRead::Completions,
            )
            | (
                KeyType::Hash | KeyType::Set,
                RedisRead::OldestAge
                | RedisRead::Lag
                | RedisRead::Pending
                | RedisRead::OldestPendingAge
                | RedisRead::OldestUnprocessedAge
                | RedisRead::Ready
                | RedisRead::InFlight
                | RedisRead::Backlog,
            )
            | (KeyType::Set, RedisRead::Arrivals | RedisRead::Completions)
            | (
                KeyType::String,
                RedisRead::Length
                | RedisRead::OldestAge
                | RedisRead::Lag
                | RedisRead::Pending
                | RedisRead::OldestPendingAge
                | RedisRead::OldestUnprocessedAge
                | RedisRead::Ready
                | RedisRead::InFlight
                | RedisRead::Backlog,
            )
            // Mapped to `Length` above.
            | (KeyType::List | KeyType::Zset, RedisRead::Backlog) => Planned::Inapplicable,
        }
    }

    /// The keys a list series reads, each planned by `add`: the list, plus kombu priority
    /// sub-lists and `also` keys when configured.
    fn list_parts(&self, mut add: impl FnMut(&[u8], KeyType) -> usize) -> Parts {
        let own = add(self.key.as_bytes(), KeyType::List);
        let subs = self
            .target
            .kombu_priority_steps
            .iter()
            .flatten()
            // Step 0 is the plain list itself in kombu.
            .filter(|step| **step != 0)
            .map(|step| {
                (
                    format!("{}{KOMBU_PRIORITY_SEP}{step}", self.key),
                    KeyType::List,
                )
            });
        let also = self.target.also.iter().map(|a| (a.key.clone(), a.key_type));
        let others: Vec<(String, KeyType)> = subs.chain(also).collect();
        if others.is_empty() {
            return Parts::Own(own);
        }
        let mut keys = vec![Part {
            idx: own,
            key: self.key.to_string(),
            key_type: KeyType::List,
        }];
        keys.extend(others.into_iter().map(|(key, key_type)| Part {
            idx: add(key.as_bytes(), key_type),
            key,
            key_type,
        }));
        Parts::Keys(keys.into_boxed_slice())
    }

    /// The counter keys a rate series reads (its key and its `also` keys), each planned by
    /// `add`.
    fn counter_parts(&self, mut add: impl FnMut(&[u8]) -> usize) -> Parts {
        let own = add(self.key.as_bytes());
        if self.target.also.is_empty() {
            return Parts::Own(own);
        }
        let mut keys = vec![Part {
            idx: own,
            key: self.key.to_string(),
            key_type: self.target.key_type,
        }];
        keys.extend(self.target.also.iter().map(|a| Part {
            idx: add(a.key.as_bytes()),
            key: a.key.clone(),
            key_type: a.key_type,
        }));
        Parts::Keys(keys.into_boxed_slice())
    }

    /// Whether the key this series reads exists, from its round-one replies. Redis deletes an
    /// empty list or sorted set, so for them existing and holding something are the same; an
    /// error reply (a key of another type) means the key exists.
    pub fn exists(&self, planned: &Planned, replies: &[Value]) -> bool {
        let holds = |i: &usize| match replies.get(*i) {
            None | Some(Value::Nil) | Some(Value::Int(0)) => false,
            Some(Value::Array(items)) => !items.is_empty(),
            Some(_) => true,
        };
        match planned {
            Planned::Sum(parts) | Planned::ListOldest(parts) | Planned::Counter(parts) => parts
                .each(self.key, self.target.key_type)
                .any(|(i, _, _)| holds(&i)),
            Planned::StreamLength { type_idx, .. }
            | Planned::StreamGroup { type_idx, .. }
            | Planned::StreamAdded { type_idx, .. } => replies
                .get(*type_idx)
                .is_some_and(|v| !matches!(reply::text(v), Ok(Some(t)) if t == "none")),
            Planned::ZsetOldest(i) | Planned::ZsetReady(i) => holds(i),
            Planned::ZsetRunning { card, .. } => holds(card),
            Planned::Inapplicable | Planned::Unknowable(_) => false,
        }
    }

    /// The error for a stream key that does not exist.
    fn missing_stream(&self) -> String {
        format!(
            "stream {:?} does not exist in db {} (Redis never deletes a stream by itself: a typo in the key, the wrong db, or the stream was deleted)",
            self.key, self.db
        )
    }

    /// Reads a `TYPE` reply of a key that must be a stream.
    fn stream_type(&self, replies: &[Value], type_idx: usize) -> Result<(), String> {
        let key = self.key;
        let ty = reply::text(get(replies, type_idx, key)?)?.unwrap_or_default();
        match ty.as_str() {
            "stream" => Ok(()),
            "none" => Err(self.missing_stream()),
            other => Err(format!("key {key:?} is a {other}, not a stream")),
        }
    }

    /// Evaluates round one; queues round-two commands into `next` where a lookup is needed.
    pub fn after_round_one(
        &self,
        planned: &Planned,
        replies: &[Value],
        now_ms: f64,
        next: &mut Batch,
    ) -> Pending {
        match self.round_one(planned, replies, now_ms, next) {
            Ok(p) => p,
            Err(e) => Pending::Done(Err(SeriesError::new(e))),
        }
    }

    /// Evaluates round two (where this series took part in it) and returns the value.
    pub fn finish(
        &self,
        pending: Pending,
        replies: &[Value],
        now_ms: f64,
    ) -> Result<f64, SeriesError> {
        let key = self.key;
        let result = match pending {
            Pending::Done(r) => return r,
            Pending::HashTimes(lookups) => {
                hash_times(&lookups, replies, self.target.timestamp.as_ref(), now_ms)
            }
            Pending::StreamFirstAfter(i) => get(replies, i, key).and_then(|v| {
                let entries = reply::array(v)?;
                match entries.first() {
                    None => Ok(0.0),
                    Some(entry) => {
                        let id = reply::text(reply::array(entry)?.first().unwrap_or(&Value::Nil))?
                            .unwrap_or_default();
                        timestamp::age_seconds(reply::stream_id_ms(&id)?, now_ms)
                    }
                }
            }),
            Pending::ZsetCount(i) => get(replies, i, key)
                .and_then(|v| checked(v, key, "a sorted set"))
                .and_then(|v| reply::int(v).map(|n| n as f64)),
            Pending::Running(running) => count_running(&running, replies, key).map(|n| n as f64),
            Pending::ReadyLessRunning { count, running } => get(replies, count, key)
                .and_then(|v| checked(v, key, "a sorted set"))
                .and_then(reply::int)
                .and_then(|due| {
                    let running = count_running(&running, replies, key)?;
                    Ok(due.saturating_sub(running).max(0) as f64)
                }),
            Pending::OldestNotRunning { due, truncated } => {
                oldest_not_running(&due, truncated, replies, key, now_ms)
            }
        };
        result.map_err(SeriesError::new)
    }

    fn round_one(
        &self,
        stage: &Planned,
        replies: &[Value],
        now_ms: f64,
        next: &mut Batch,
    ) -> Result<Pending, String> {
        let key = self.key;
        Ok(match stage {
            Planned::Inapplicable => {
                return Err(format!(
                    "measure {} does not apply to a {} key",
                    self.measure,
                    self.target.key_type.redis_name()
                ));
            }
            Planned::Unknowable(why) => return Err(why.to_string()),
            Planned::Sum(parts) => {
                let mut total = 0i64;
                for (i, part_key, part_type) in parts.each(key, self.target.key_type) {
                    let v = checked(get(replies, i, part_key)?, part_key, expected(part_type))?;
                    total = total.saturating_add(
                        reply::int(v).map_err(|e| format!("key {part_key:?}: {e}"))?,
                    );
                }
                Pending::Done(Ok(total as f64))
            }
            Planned::ListOldest(parts) => self.list_oldest(parts, replies, now_ms, next)?,
            Planned::Counter(parts) => Pending::Done(Ok(self.counter(parts, replies)?)),
            Planned::StreamAdded { type_idx, info_idx } => {
                self.stream_type(replies, *type_idx)?;
                let info = reply::pairs(get(replies, *info_idx, key)?)?;
                match info.iter().find(|(k, _)| k == "entries-added") {
                    Some((_, Value::Nil)) | None => {
                        return Err(format!(
                            "Redis did not report entries-added for stream {key:?} (it counts arrivals from Redis 7.0 on); refusing to guess"
                        ));
                    }
                    Some((_, v)) => Pending::Done(Ok(reply::int(v)? as f64)),
                }
            }
            Planned::StreamLength { type_idx, len_idx } => {
                self.stream_type(replies, *type_idx)?;
                let v = checked(get(replies, *len_idx, key)?, key, "a stream")?;
                Pending::Done(Ok(reply::int(v)? as f64))
            }
            Planned::StreamGroup {
                type_idx,
                groups_idx,
                pending_idx,
            } => self.stream_group(*type_idx, *groups_idx, *pending_idx, replies, now_ms, next)?,
            Planned::ZsetOldest(i) => {
                let v = checked(get(replies, *i, key)?, key, "a sorted set")?;
                match reply::first_score(v)? {
                    None => Pending::Done(Ok(0.0)),
                    Some(score) => {
                        let due_ms =
                            score_to_ms(&score, self.target.score_unit.unwrap_or_default())
                                .map_err(|e| format!("sorted set {key:?}: {e}"))?;
                        // Nothing is due before its run-at time: only overdue entries have an age.
                        Pending::Done(Ok(if due_ms <= now_ms {
                            (now_ms - due_ms) / 1000.0
                        } else {
                            0.0
                        }))
                    }
                }
            }
            Planned::ZsetRunning { card, range } => {
                self.zset_running(*card, *range, replies, now_ms, next)?
            }
            Planned::ZsetReady(card_idx) => {
                let card = checked(get(replies, *card_idx, key)?, key, "a sorted set")?;
                if reply::int(card)? == 0 {
                    // No such key: Redis deleted the emptied set. Nothing is due.
                    return Ok(Pending::Done(Ok(0.0)));
                }
                let bound = ms_to_score(now_ms, self.target.score_unit.unwrap_or_default());
                Pending::ZsetCount(next.add(&[
                    b"ZCOUNT",
                    key.as_bytes(),
                    b"-inf",
                    bound.as_bytes(),
                ]))
            }
        })
    }

    fn list_oldest(
        &self,
        parts: &Parts,
        replies: &[Value],
        now_ms: f64,
        next: &mut Batch,
    ) -> Result<Pending, String> {
        let Some(spec) = &self.target.timestamp else {
            return Err("no timestamp configured".into());
        };
        let mut oldest: Option<f64> = None;
        let mut lookups = Vec::new();
        for (i, part_key, part_type) in parts.each(self.key, KeyType::List) {
            let v = checked(get(replies, i, part_key)?, part_key, expected(part_type))?;
            if part_type == KeyType::Zset {
                let members = reply::array(v)?;
                if members.len() > MAX_MEMBERS_AGED {
                    return Err(format!(
                        "sorted set {part_key:?} holds more than {MAX_MEMBERS_AGED} jobs: its order is not enqueue order, so the oldest is found by reading every job's time, which is not done beyond {MAX_MEMBERS_AGED}"
                    ));
                }
                for member in members {
                    if let Some(element) = reply::bytes(member)? {
                        self.element_time(
                            element,
                            part_key,
                            spec,
                            next,
                            &mut lookups,
                            &mut oldest,
                        )?;
                    }
                }
                continue;
            }
            // An empty list does not exist in Redis: nil here means this list holds nothing.
            let Some(element) = reply::bytes(v)? else {
                continue;
            };
            self.element_time(element, part_key, spec, next, &mut lookups, &mut oldest)?;
        }
        if !lookups.is_empty() {
            // json_pointer and hash are exclusive (config validation), so lookups decide alone.
            return Ok(Pending::HashTimes(lookups));
        }
        Ok(Pending::Done(match oldest {
            None => Ok(0.0),
            Some(ms) => timestamp::age_seconds(ms, now_ms)
                .map_err(|e| SeriesError::new(format!("list {key:?}: {e}", key = self.key))),
        }))
    }

    /// Round one of a sorted set whose members may be being run: asks, for the members that
    /// matter to the measure, whether each is.
    fn zset_running(
        &self,
        card: usize,
        range: usize,
        replies: &[Value],
        now_ms: f64,
        next: &mut Batch,
    ) -> Result<Pending, String> {
        let key = self.key;
        let unit = self.target.score_unit.unwrap_or_default();
        let template = self.target.in_progress.as_deref().unwrap_or_default();
        let card = reply::int(checked(get(replies, card, key)?, key, "a sorted set")?)?;
        if card == 0 {
            return Ok(Pending::Done(Ok(0.0)));
        }
        let members =
            reply::member_scores(checked(get(replies, range, key)?, key, "a sorted set")?)?;
        let mut exists = |member: &[u8]| {
            let marker = template.replace("{id}", &String::from_utf8_lossy(member));
            next.add(&[b"EXISTS", marker.as_bytes()])
        };
        let truncated = members.len() == MAX_MEMBERS_AGED;
        let mut due = Vec::new();
        for (member, score) in &members {
            let ms = score_to_ms(score, unit).map_err(|e| format!("sorted set {key:?}: {e}"))?;
            if ms <= now_ms {
                due.push((member.as_slice(), ms));
            }
        }
        Ok(match self.measure {
            Measure::InFlight => {
                if usize::try_from(card).unwrap_or(usize::MAX) > MAX_MEMBERS_AGED {
                    return Err(format!(
                        "sorted set {key:?} holds {card} jobs; which are being run is read for at most {MAX_MEMBERS_AGED}"
                    ));
                }
                Pending::Running(members.iter().map(|(m, _)| exists(m)).collect())
            }
            Measure::OldestAgeSeconds => Pending::OldestNotRunning {
                due: due.iter().map(|(m, ms)| (*ms, exists(m))).collect(),
                truncated,
            },
            _ => {
                let running = due.iter().map(|(m, _)| exists(m)).collect();
                let bound = ms_to_score(now_ms, unit);
                Pending::ReadyLessRunning {
                    count: next.add(&[b"ZCOUNT", key.as_bytes(), b"-inf", bound.as_bytes()]),
                    running,
                }
            }
        })
    }

    /// The enqueue time of one job (`element`, an element of `list_key`): read from the
    /// element itself into `oldest`, or a round-two lookup pushed to `lookups`.
    fn element_time(
        &self,
        element: &[u8],
        list_key: &str,
        spec: &TimestampSpec,
        next: &mut Batch,
        lookups: &mut Vec<HashLookup>,
        oldest: &mut Option<f64>,
    ) -> Result<(), String> {
        match (&spec.json_pointer, &spec.hash, &spec.field) {
            (Some(pointer), None, _) => {
                let ms = timestamp::from_json(element, pointer, spec.unit)
                    .map_err(|e| format!("oldest element of {list_key:?}: {e}"))?;
                *oldest = Some(oldest.map_or(ms, |o: f64| o.min(ms)));
            }
            (None, Some(template), Some(field)) => {
                let id = String::from_utf8_lossy(element);
                let hash = template.replace("{id}", &id).replace("{key}", list_key);
                let idx = next.add(&[b"HGET", hash.as_bytes(), field.as_bytes()]);
                lookups.push(HashLookup {
                    idx,
                    hash,
                    element: None,
                });
            }
            (Some(_), Some(template), None) => {
                // One hash keeps every element's JSON under the element (dramatiq, bee-queue).
                let hash = template.replace("{key}", list_key);
                let idx = next.add(&[b"HGET", hash.as_bytes(), element]);
                let element = Some(String::from_utf8_lossy(element).into_owned());
                lookups.push(HashLookup { idx, hash, element });
            }
            _ => {
                return Err(
                    "timestamp needs json_pointer, hash + field, or hash + json_pointer".into(),
                );
            }
        }
        Ok(())
    }

    /// The sum of a rate's counters. A key that does not exist counts 0 beside one that does
    /// (BullMQ writes its failed count at the first failure); none existing is an error, never
    /// a counter at 0: a typo, or a library that does not keep it.
    fn counter(&self, parts: &Parts, replies: &[Value]) -> Result<f64, String> {
        let mut total = 0.0;
        let mut found = false;
        for (i, part_key, _) in parts.each(self.key, self.target.key_type) {
            let v = checked(
                get(replies, i, part_key)?,
                part_key,
                expected(self.target.key_type),
            )?;
            let Some(text) = reply::text(v)? else {
                continue;
            };
            let n: f64 = text
                .trim()
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| format!("counter {part_key:?} holds {text:?}, not a count"))?;
            total += n;
            found = true;
        }
        if !found {
            let field = match &self.target.field {
                Some(f) => format!(" field {f:?}"),
                None => String::new(),
            };
            return Err(format!(
                "counter {:?}{field} does not exist in db {}: nothing has counted yet, or it is not the key the producer or worker counts in; refusing to serve 0",
                self.key, self.db
            ));
        }
        Ok(total)
    }

    fn stream_group(
        &self,
        type_idx: usize,
        groups_idx: usize,
        pending_idx: Option<usize>,
        replies: &[Value],
        now_ms: f64,
        next: &mut Batch,
    ) -> Result<Pending, String> {
        let key = self.key;
        let group = self.target.group.as_deref().unwrap_or_default();
        self.stream_type(replies, type_idx)?;
        let groups = reply::array(get(replies, groups_idx, key)?)?;
        let mut found = None;
        for g in groups {
            let fields = reply::pairs(g)?;
            let name = fields
                .iter()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| reply::text(v));
            if let Some(Ok(Some(name))) = name
                && name == group
            {
                found = Some(fields);
                break;
            }
        }
        let Some(fields) = found else {
            return Err(format!(
                "consumer group {group:?} does not exist on stream {key:?}"
            ));
        };
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let pending = field("pending").map(reply::int).transpose()?.unwrap_or(0);
        Ok(match self.measure {
            Measure::Lag => match field("lag") {
                Some(Value::Nil) | None => {
                    return Err(format!(
                        "Redis cannot tell the lag of group {group:?} on stream {key:?} (it reports nil after XDEL or when the group's position is unknown); refusing to guess"
                    ));
                }
                Some(v) => Pending::Done(Ok(reply::int(v)? as f64)),
            },
            Measure::Pending => Pending::Done(Ok(pending as f64)),
            // Entries the group has been given, less those not yet acknowledged: the entries
            // it finished. Redis counts `entries-read` from 7.0 on.
            Measure::CompletionRate => match field("entries-read") {
                Some(Value::Nil) | None => {
                    return Err(format!(
                        "Redis did not report entries-read for group {group:?} on stream {key:?} (it counts them from Redis 7.0 on, and reports nil when the group was created at an arbitrary ID); refusing to guess"
                    ));
                }
                Some(v) => Pending::Done(Ok(reply::int(v)?.saturating_sub(pending) as f64)),
            },
            // What waits for the group: entries not yet delivered, and those delivered and not
            // yet acknowledged.
            Measure::DrainSeconds | Measure::WorkersNeeded => match field("lag") {
                Some(Value::Nil) | None => {
                    return Err(format!(
                        "Redis cannot tell the lag of group {group:?} on stream {key:?} (it reports nil after XDEL or when the group's position is unknown), so not what waits; refusing to guess"
                    ));
                }
                Some(v) => Pending::Done(Ok(reply::int(v)?.saturating_add(pending) as f64)),
            },
            _ if pending > 0 => {
                let summary = reply::array(get(replies, pending_idx.unwrap_or(usize::MAX), key)?)?;
                let min_id =
                    reply::text(summary.get(1).unwrap_or(&Value::Nil))?.ok_or_else(|| {
                        format!("XPENDING on {key:?} reported {pending} pending but no oldest ID")
                    })?;
                Pending::Done(
                    timestamp::age_seconds(reply::stream_id_ms(&min_id)?, now_ms)
                        .map_err(SeriesError::new),
                )
            }
            Measure::OldestPendingAgeSeconds => Pending::Done(Ok(0.0)),
            _ => {
                // Nothing pending: the oldest unfinished entry is the first one after the group's
                // last-delivered ID (delivery is in ID order). A known lag of 0 means there is none.
                if let Some(Value::Int(0)) = field("lag") {
                    return Ok(Pending::Done(Ok(0.0)));
                }
                let last = field("last-delivered-id")
                    .map(reply::text)
                    .transpose()?
                    .flatten()
                    .unwrap_or_else(|| "0-0".into());
                let from = format!("({last}");
                Pending::StreamFirstAfter(next.add(&[
                    b"XRANGE",
                    key.as_bytes(),
                    from.as_bytes(),
                    b"+",
                    b"COUNT",
                    b"1",
                ]))
            }
        })
    }
}

fn get<'r>(replies: &'r [Value], i: usize, key: &str) -> Result<&'r Value, String> {
    replies.get(i).ok_or_else(|| {
        format!(
            "no reply for key {key:?} (the pipeline returned {} replies)",
            replies.len()
        )
    })
}

/// Turns a server error reply into a message naming the key and what it should have been.
fn checked<'r>(v: &'r Value, key: &str, should_be: &str) -> Result<&'r Value, String> {
    match reply::server_error(v) {
        Some(e) if e.starts_with("WRONGTYPE") => {
            Err(format!("key {key:?} is not {should_be} (Redis: {e})"))
        }
        Some(e) => Err(format!("key {key:?}: Redis replied {e}")),
        None => Ok(v),
    }
}

fn expected(kt: KeyType) -> &'static str {
    match kt {
        KeyType::List => "a list",
        KeyType::Stream => "a stream",
        KeyType::Zset => "a sorted set",
        KeyType::Hash => "a hash",
        KeyType::Set => "a set",
        KeyType::String => "a string",
    }
}

fn hash_times(
    lookups: &[HashLookup],
    replies: &[Value],
    spec: Option<&TimestampSpec>,
    now_ms: f64,
) -> Result<f64, String> {
    let spec = spec.ok_or("no timestamp configured")?;
    let mut oldest: Option<f64> = None;
    for HashLookup { idx, hash, element } in lookups {
        let field = element
            .as_deref()
            .or(spec.field.as_deref())
            .unwrap_or_default();
        let v = checked(get(replies, *idx, hash)?, hash, "a hash")?;
        let missing = || {
            format!(
                "hash {hash:?} has no field {field:?} (the job it names is gone or was never written)"
            )
        };
        let ms = match &spec.json_pointer {
            // The field is the element, its value the job's JSON.
            Some(pointer) => {
                let json = reply::bytes(v)?.ok_or_else(missing)?;
                timestamp::from_json(json, pointer, spec.unit)
            }
            None => timestamp::parse_text(&reply::text(v)?.ok_or_else(missing)?, spec.unit),
        }
        .map_err(|e| format!("hash {hash:?} field {field:?}: {e}"))?;
        oldest = Some(oldest.map_or(ms, |o: f64| o.min(ms)));
    }
    match oldest {
        Some(ms) => timestamp::age_seconds(ms, now_ms),
        None => Ok(0.0),
    }
}

/// The age of the first of `due` (in score order) not being run.
fn oldest_not_running(
    due: &[(f64, usize)],
    truncated: bool,
    replies: &[Value],
    key: &str,
    now_ms: f64,
) -> Result<f64, String> {
    for (ms, idx) in due {
        if !is_running(*idx, replies, key)? {
            return timestamp::age_seconds(*ms, now_ms);
        }
    }
    if truncated && due.len() == MAX_MEMBERS_AGED {
        return Err(format!(
            "the {MAX_MEMBERS_AGED} lowest-scored jobs of {key:?} are all being run; the oldest waiting one is further on and is not looked for"
        ));
    }
    Ok(0.0)
}

/// Whether the `EXISTS` at `idx` found the in-progress key.
fn is_running(idx: usize, replies: &[Value], key: &str) -> Result<bool, String> {
    let v = get(replies, idx, key)?;
    if let Some(e) = reply::server_error(v) {
        return Err(format!(
            "in-progress key of a job in {key:?}: Redis replied {e}"
        ));
    }
    Ok(reply::int(v)? > 0)
}

/// How many of the `EXISTS` at `idx` found their in-progress key.
fn count_running(idx: &[usize], replies: &[Value], key: &str) -> Result<i64, String> {
    let mut n = 0;
    for i in idx {
        n += i64::from(is_running(*i, replies, key)?);
    }
    Ok(n)
}

fn score_to_ms(score: &str, unit: ScoreUnit) -> Result<f64, String> {
    let s: f64 = score
        .parse()
        .map_err(|_| format!("score {score:?} is not a number"))?;
    Ok(match unit {
        ScoreUnit::S => s * 1000.0,
        ScoreUnit::Ms => s,
        ScoreUnit::Bullmq => (s / 4096.0).floor(),
    })
}

fn ms_to_score(now_ms: f64, unit: ScoreUnit) -> String {
    let score = match unit {
        ScoreUnit::S => now_ms / 1000.0,
        ScoreUnit::Ms => now_ms,
        // Every counter value of the current millisecond is due.
        ScoreUnit::Bullmq => (now_ms.floor() + 1.0) * 4096.0 - 1.0,
    };
    format!("{score}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kombu_sub_lists_are_named_like_kombu() {
        let target: RedisTarget =
            yaml_serde::from_str("{type: list, key: celery, kombu_priority_steps: [0, 3, 6, 9]}")
                .expect("parses");
        let read = SeriesRead {
            target: &target,
            measure: Measure::Length,
            key: "celery",
            db: 0,
        };
        let mut batch = Batch::new();
        let parts = read.list_parts(|k, _| batch.add(&[b"LLEN", k]));
        let keys: Vec<String> = parts
            .each("celery", KeyType::List)
            .map(|(i, k, _)| {
                assert_eq!(batch.key(i), Some(k.as_bytes()));
                k.to_string()
            })
            .collect();
        assert_eq!(
            keys,
            [
                "celery",
                "celery\x06\x163",
                "celery\x06\x166",
                "celery\x06\x169"
            ]
        );
        // Without sub-lists a series keeps no copy of its key.
        let plain: RedisTarget = yaml_serde::from_str("{type: list, key: q}").expect("parses");
        let read = SeriesRead {
            target: &plain,
            key: "q",
            ..read
        };
        assert!(matches!(
            read.list_parts(|k, _| batch.add(&[b"LLEN", k])),
            Parts::Own(_)
        ));
    }

    #[test]
    fn a_measure_a_key_type_has_not_plans_nothing_and_reads_as_an_error() {
        let list: RedisTarget = yaml_serde::from_str("{type: list, key: q}").expect("parses");
        for measure in [Measure::Lag, Measure::Ready, Measure::Unacked] {
            let read = SeriesRead {
                target: &list,
                measure,
                key: "q",
                db: 0,
            };
            let mut batch = Batch::new();
            let planned = read.plan(&mut batch);
            assert!(batch.is_empty(), "{measure}: nothing is sent");
            let Pending::Done(Err(e)) = read.after_round_one(&planned, &[], 0.0, &mut batch) else {
                panic!("{measure}: an error, never a value");
            };
            assert!(e.0.contains("does not apply to a list"), "{e}");
        }
    }

    /// A captured JSON rendering of a reply as the `redis::Value` the client would give
    /// (objects are RESP3 maps).
    fn value_of(j: &serde_json::Value) -> Value {
        match j {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Int(i64::from(*b)),
            serde_json::Value::Number(n) => Value::Int(n.as_i64().expect("integer")),
            serde_json::Value::String(s) => Value::BulkString(s.as_bytes().to_vec()),
            serde_json::Value::Array(a) => Value::Array(a.iter().map(value_of).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (Value::BulkString(k.as_bytes().to_vec()), value_of(v)))
                    .collect(),
            ),
        }
    }

    /// Evaluates one stream measure over captured replies, answering each planned command from
    /// `answer` by its name.
    fn stream_measure(
        measure: Measure,
        answer: impl Fn(&str) -> Value,
        now_ms: f64,
    ) -> Result<f64, SeriesError> {
        let target: RedisTarget =
            yaml_serde::from_str("{type: stream, key: \"embed:stream\", group: workers}")
                .expect("parses");
        let read = SeriesRead {
            target: &target,
            measure,
            key: "embed:stream",
            db: 3,
        };
        let mut first = Batch::new();
        let planned = read.plan(&mut first);
        let replies: Vec<Value> = (0..first.len()).map(|i| answer(&first.name(i))).collect();
        let mut second = Batch::new();
        let pending = read.after_round_one(&planned, &replies, now_ms, &mut second);
        let replies: Vec<Value> = (0..second.len()).map(|i| answer(&second.name(i))).collect();
        read.finish(pending, &replies, now_ms)
    }

    #[test]
    fn captured_stream_replies_give_lag_pending_and_ages() {
        let fixture: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/redis-7.0.15-queue-idioms.json"
        ))
        .expect("fixture");
        let stream = &fixture["stream"];
        let now_ms = fixture["now_ms"].as_f64().expect("now_ms");
        let answer = |groups: &'static str| {
            let stream = stream.clone();
            move |name: &str| match name {
                "TYPE" => Value::SimpleString("stream".into()),
                "XINFO" => value_of(&stream[groups]),
                "XPENDING" => value_of(&stream["XPENDING_summary"]),
                "XRANGE" => value_of(&stream["XRANGE_first_undelivered"]),
                other => panic!("unexpected command {other}"),
            }
        };
        assert_eq!(
            stream_measure(Measure::Lag, answer("XINFO_GROUPS"), now_ms),
            Ok(4.0)
        );
        assert_eq!(
            stream_measure(Measure::Pending, answer("XINFO_GROUPS"), now_ms),
            Ok(2.0)
        );
        // Oldest pending is 1795311009997-0; the capture's clock read 1795311069997: 60 s.
        assert_eq!(
            stream_measure(
                Measure::OldestPendingAgeSeconds,
                answer("XINFO_GROUPS"),
                now_ms
            ),
            Ok(60.0)
        );
        assert_eq!(
            stream_measure(
                Measure::OldestUnprocessedAgeSeconds,
                answer("XINFO_GROUPS"),
                now_ms
            ),
            Ok(60.0)
        );
        let err = stream_measure(
            Measure::Lag,
            answer("XINFO_GROUPS_after_XDEL_of_undelivered_entry"),
            now_ms,
        )
        .expect_err("nil lag after XDEL");
        assert!(err.0.contains("refusing to guess"), "{err}");
    }

    #[test]
    fn stream_counters_are_what_redis_counts_and_never_a_guess() {
        let fixture: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/redis-7.0.15-queue-idioms.json"
        ))
        .expect("fixture");
        let stream = fixture["stream"].clone();
        let now_ms = fixture["now_ms"].as_f64().expect("now_ms");
        let answer = |xinfo: serde_json::Value| {
            move |name: &str| match name {
                "TYPE" => Value::SimpleString("stream".into()),
                "XINFO" => value_of(&xinfo),
                other => panic!("unexpected command {other}"),
            }
        };
        let groups = stream["XINFO_GROUPS"].clone();
        assert_eq!(
            stream_measure(
                Measure::ArrivalRate,
                answer(stream["XINFO_STREAM"].clone()),
                now_ms
            ),
            Ok(6.0),
            "entries-added"
        );
        assert_eq!(
            stream_measure(Measure::CompletionRate, answer(groups.clone()), now_ms),
            Ok(0.0),
            "entries-read 2, both still pending: none acknowledged"
        );
        assert_eq!(
            stream_measure(Measure::DrainSeconds, answer(groups.clone()), now_ms),
            Ok(6.0),
            "what waits: lag 4 + pending 2"
        );
        let nil_lag = stream["XINFO_GROUPS_after_XDEL_of_undelivered_entry"].clone();
        let err = stream_measure(Measure::DrainSeconds, answer(nil_lag), now_ms)
            .expect_err("nil lag: what waits is unknown");
        assert!(err.0.contains("refusing to guess"), "{err}");
        // Redis 6 sends no entries-read, nor entries-added.
        let mut old = groups.clone();
        old[0]
            .as_object_mut()
            .expect("group")
            .remove("entries-read");
        let err = stream_measure(Measure::CompletionRate, answer(old), now_ms)
            .expect_err("no entries-read");
        assert!(err.0.contains("Redis 7.0"), "{err}");
        let mut old = stream["XINFO_STREAM"].clone();
        old.as_object_mut().expect("info").remove("entries-added");
        let err = stream_measure(Measure::ArrivalRate, answer(old), now_ms)
            .expect_err("no entries-added");
        assert!(err.0.contains("Redis 7.0"), "{err}");
    }

    #[test]
    fn counters_sum_their_keys_and_none_existing_is_an_error() {
        let target: RedisTarget = yaml_serde::from_str(
            "{type: hash, key: 'bull:q:metrics:completed', field: count, also: [{type: hash, key: 'bull:q:metrics:failed'}]}",
        )
        .expect("parses");
        let run = |replies: Vec<Value>| {
            let read = SeriesRead {
                target: &target,
                measure: Measure::CompletionRate,
                key: "bull:q:metrics:completed",
                db: 0,
            };
            let mut first = Batch::new();
            let planned = read.plan(&mut first);
            assert_eq!(first.len(), 2, "one HGET per counter");
            let mut second = Batch::new();
            let pending = read.after_round_one(&planned, &replies, 0.0, &mut second);
            read.finish(pending, &[], 0.0)
        };
        assert_eq!(run(vec![bulk("40"), bulk("2")]), Ok(42.0));
        assert_eq!(
            run(vec![bulk("40"), Value::Nil]),
            Ok(40.0),
            "no failure yet: the failed count is written at the first"
        );
        let err = run(vec![Value::Nil, Value::Nil]).expect_err("no counter at all");
        assert!(err.0.contains("does not exist"), "{err}");
        assert!(err.0.contains("field \"count\""), "{err}");
        let err = run(vec![bulk("forty"), Value::Nil]).expect_err("not a number");
        assert!(err.0.contains("not a count"), "{err}");
    }

    #[test]
    fn resp2_flat_group_replies_read_the_same_as_resp3_maps() {
        let text = include_str!("../../../tests/fixtures/redis-7.0.15-streams-resp2-resp3.txt");
        let mut lines = text.lines();
        let mut groups = Vec::new();
        while let Some(line) = lines.next() {
            if line == "> XINFO GROUPS embed:stream" {
                let reply: serde_json::Value =
                    serde_json::from_str(lines.next().expect("reply line")).expect("json");
                groups.push(value_of(&reply));
            }
        }
        assert_eq!(groups.len(), 2, "one RESP2 and one RESP3 rendering");
        for g in groups {
            let answer = |name: &str| match name {
                "TYPE" => Value::SimpleString("stream".into()),
                "XINFO" => g.clone(),
                other => panic!("unexpected command {other}"),
            };
            assert_eq!(stream_measure(Measure::Pending, answer, 0.0), Ok(2.0));
            assert!(
                stream_measure(Measure::Lag, answer, 0.0).is_err(),
                "lag is null in this capture"
            );
        }
    }

    #[test]
    fn a_missing_stream_is_an_error_for_every_stream_measure() {
        for measure in [
            Measure::Length,
            Measure::Lag,
            Measure::Pending,
            Measure::OldestPendingAgeSeconds,
            Measure::OldestUnprocessedAgeSeconds,
        ] {
            let answer = |name: &str| match name {
                "TYPE" => Value::SimpleString("none".into()),
                "XLEN" => Value::Int(0),
                _ => Value::Nil,
            };
            let err = stream_measure(measure, answer, 0.0).expect_err("missing stream");
            assert!(
                err.0.contains("\"embed:stream\" does not exist in db 3"),
                "{measure}: {err}"
            );
        }
    }

    #[test]
    fn existence_follows_from_the_round_one_replies() {
        let target: RedisTarget = yaml_serde::from_str("{type: zset, key: z}").expect("parses");
        let read = SeriesRead {
            target: &target,
            measure: Measure::Ready,
            key: "z",
            db: 0,
        };
        let mut first = Batch::new();
        let planned = read.plan(&mut first);
        assert_eq!((first.len(), first.name(0).as_str()), (1, "ZCARD"));
        assert!(!read.exists(&planned, &[Value::Int(0)]));
        assert!(read.exists(&planned, &[Value::Int(2)]));
        let mut second = Batch::new();
        let pending = read.after_round_one(&planned, &[Value::Int(0)], 0.0, &mut second);
        assert!(second.is_empty(), "an absent set needs no ZCOUNT");
        assert_eq!(read.finish(pending, &[], 0.0), Ok(0.0));
    }

    #[test]
    fn bullmq_scores_map_to_milliseconds() {
        assert_eq!(
            score_to_ms(
                &(1_795_310_979_997.0 * 4096.0 + 7.0).to_string(),
                ScoreUnit::Bullmq
            ),
            Ok(1_795_310_979_997.0)
        );
        assert_eq!(
            score_to_ms("1795310979.5", ScoreUnit::S),
            Ok(1_795_310_979_500.0)
        );
    }

    /// Evaluates `measure` of `target` (a YAML `redis:` block) over key `key`, answering each
    /// planned command from `answer(name, key)`.
    fn evaluate(
        target: &str,
        measure: Measure,
        key: &str,
        answer: impl Fn(&str, &str) -> Value,
        now_ms: f64,
    ) -> Result<f64, SeriesError> {
        let target: RedisTarget = yaml_serde::from_str(target).expect("parses");
        let read = SeriesRead {
            target: &target,
            measure,
            key,
            db: 0,
        };
        let replies = |batch: &Batch| -> Vec<Value> {
            (0..batch.len())
                .map(|i| {
                    let key =
                        String::from_utf8_lossy(batch.key(i).unwrap_or_default()).into_owned();
                    answer(&batch.name(i), &key)
                })
                .collect()
        };
        let mut first = Batch::new();
        let planned = read.plan(&mut first);
        let mut second = Batch::new();
        let pending = read.after_round_one(&planned, &replies(&first), now_ms, &mut second);
        read.finish(pending, &replies(&second), now_ms)
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A time in epoch ms that the tests' times are counted from.
    const T: f64 = 1_795_000_000_000.0;

    const BULLMQ: &str = "{type: list, key: \"b:q:wait\", also: [{type: zset, key: \"b:q:prioritized\"}, {type: list, key: \"b:q:paused\"}], timestamp: {hash: \"b:q:{id}\", field: timestamp, unit: ms}}";

    #[test]
    fn a_queue_across_keys_sums_them_and_ages_its_oldest_job_wherever_it_waits() {
        // Job 1 in the list (t = 5 000), jobs 2 and 3 prioritized (t = 3 000 and 8 000).
        let answer = |name: &str, key: &str| match (name, key) {
            ("LLEN", "b:q:wait") => Value::Int(1),
            ("ZCARD", "b:q:prioritized") => Value::Int(2),
            ("LLEN", "b:q:paused") => Value::Int(0),
            ("LINDEX", "b:q:wait") => bulk("1"),
            ("LINDEX", "b:q:paused") => Value::Nil,
            ("ZRANGE", "b:q:prioritized") => Value::Array(vec![bulk("3"), bulk("2")]),
            ("HGET", "b:q:1") => bulk("1795000005000"),
            ("HGET", "b:q:2") => bulk("1795000003000"),
            ("HGET", "b:q:3") => bulk("1795000008000"),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            evaluate(BULLMQ, Measure::Length, "b:q:wait", answer, T + 10_000.0),
            Ok(3.0)
        );
        assert_eq!(
            evaluate(
                BULLMQ,
                Measure::OldestAgeSeconds,
                "b:q:wait",
                answer,
                T + 10_000.0
            ),
            Ok(7.0),
            "the prioritized job enqueued at 3 000 is the oldest"
        );
        // A prioritized set larger than the bound is an error, never an age from part of it.
        let many = |name: &str, key: &str| match (name, key) {
            ("ZRANGE", _) => Value::Array(
                (0..=MAX_MEMBERS_AGED)
                    .map(|i| bulk(&i.to_string()))
                    .collect(),
            ),
            ("LINDEX", _) => Value::Nil,
            ("HGET", _) => bulk("1"),
            other => panic!("unexpected {other:?}"),
        };
        let err = evaluate(
            BULLMQ,
            Measure::OldestAgeSeconds,
            "b:q:wait",
            many,
            T + 10_000.0,
        )
        .expect_err("beyond the bound");
        assert!(err.0.contains("more than 1000 jobs"), "{err}");
        // The wrong type in one of the keys names that key, never a partial sum.
        let wrong = |name: &str, key: &str| match (name, key) {
            ("ZCARD", _) => super::super::node::error_reply(
                "WRONGTYPE",
                "Operation against a key holding the wrong kind of value",
            ),
            _ => Value::Int(1),
        };
        let err = evaluate(BULLMQ, Measure::Length, "b:q:wait", wrong, 0.0).expect_err("type");
        assert!(
            err.0.contains("\"b:q:prioritized\" is not a sorted set"),
            "{err}"
        );
    }

    const ARQ: &str = "{type: zset, key: q, score_unit: ms, in_progress: \"arq:in-progress:{id}\"}";

    /// Jobs a (t 1 000, running), b (t 2 000), c (t 3 000, running), d (t 50 000, deferred).
    fn arq_answer(name: &str, key: &str) -> Value {
        match (name, key) {
            ("ZCARD", "q") => Value::Int(4),
            ("ZRANGE", "q") => Value::Array(vec![
                bulk("a"),
                bulk("1795000001000"),
                bulk("b"),
                bulk("1795000002000"),
                bulk("c"),
                bulk("1795000003000"),
                bulk("d"),
                bulk("1795000050000"),
            ]),
            ("ZCOUNT", "q") => Value::Int(3),
            ("EXISTS", "arq:in-progress:a" | "arq:in-progress:c") => Value::Int(1),
            ("EXISTS", _) => Value::Int(0),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn jobs_being_run_are_neither_waiting_nor_the_oldest_waiting() {
        assert_eq!(
            evaluate(ARQ, Measure::Ready, "q", arq_answer, T + 10_000.0),
            Ok(1.0)
        );
        assert_eq!(
            evaluate(ARQ, Measure::InFlight, "q", arq_answer, T + 10_000.0),
            Ok(2.0)
        );
        assert_eq!(
            evaluate(
                ARQ,
                Measure::OldestAgeSeconds,
                "q",
                arq_answer,
                T + 10_000.0
            ),
            Ok(8.0),
            "b, enqueued at 2 000, is the oldest not being run"
        );
        // RESP3 pairs read the same.
        let resp3 = |name: &str, key: &str| match (name, key) {
            ("ZRANGE", "q") => Value::Array(vec![
                Value::Array(vec![bulk("a"), Value::Double(T + 1000.0)]),
                Value::Array(vec![bulk("b"), Value::Double(T + 2000.0)]),
            ]),
            (name, key) => arq_answer(name, key),
        };
        assert_eq!(
            evaluate(ARQ, Measure::OldestAgeSeconds, "q", resp3, T + 10_000.0),
            Ok(8.0)
        );
        // Every job of a full range being run: the oldest waiting is beyond it, not 0.
        let busy = |name: &str, key: &str| match (name, key) {
            ("ZCARD", _) => Value::Int(5000),
            ("ZRANGE", _) => Value::Array(
                (0..MAX_MEMBERS_AGED)
                    .flat_map(|i| [bulk(&format!("j{i}")), bulk("1795000001000")])
                    .collect(),
            ),
            ("EXISTS", _) => Value::Int(1),
            other => panic!("unexpected {other:?}"),
        };
        let err = evaluate(ARQ, Measure::OldestAgeSeconds, "q", busy, T + 10_000.0)
            .expect_err("not looked for");
        assert!(err.0.contains("all being run"), "{err}");
        let err = evaluate(ARQ, Measure::InFlight, "q", busy, T + 10_000.0).expect_err("bound");
        assert!(err.0.contains("at most 1000"), "{err}");
    }
}
