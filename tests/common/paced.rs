//! Clients at known paces and what they did, for the tests of rates and of workers needed: a
//! record of when each job entered or finished, a stream worker that reads and acknowledges one
//! entry, and the parts of a served answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// When each job entered or finished, as the client that did it recorded.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Instant>>>);

impl Events {
    pub fn record(&self) {
        self.0.lock().expect("events").push(Instant::now());
    }

    /// Jobs per second over the last `window`.
    pub fn rate(&self, window: Duration) -> f64 {
        let since = Instant::now() - window;
        let n = self
            .0
            .lock()
            .expect("events")
            .iter()
            .filter(|t| **t >= since)
            .count();
        n as f64 / window.as_secs_f64()
    }
}

/// The first stream entry ID in a reply (`XREADGROUP`'s one entry).
pub fn first_id(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => {
            let s = String::from_utf8_lossy(b);
            let (ms, seq) = s.split_once('-')?;
            (!ms.is_empty()
                && !seq.is_empty()
                && ms.chars().all(|c| c.is_ascii_digit())
                && seq.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.into_owned())
        }
        redis::Value::Array(items) => items.iter().find_map(first_id),
        redis::Value::Map(pairs) => pairs
            .iter()
            .find_map(|(k, v)| first_id(k).or_else(|| first_id(v))),
        _ => None,
    }
}

/// A worker of group `workers` reads one new entry of `stream` and acknowledges it; `false`
/// when none was new.
pub async fn work_one(c: &mut MultiplexedConnection, stream: &str) -> bool {
    let read: redis::Value = super::cmd(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "w1",
            "COUNT",
            "1",
            "STREAMS",
            stream,
            ">",
        ],
    )
    .await;
    let Some(id) = first_id(&read) else {
        return false;
    };
    let acked: i64 = super::cmd(c, &["XACK", stream, "workers", &id]).await;
    assert_eq!(acked, 1, "acknowledged {id}");
    true
}

/// What waits for group `workers` of `stream`: `lag` + `pending`, from `XINFO GROUPS`.
pub async fn waiting(c: &mut MultiplexedConnection, stream: &str) -> f64 {
    let groups: Vec<redis::Value> = super::cmd(c, &["XINFO", "GROUPS", stream]).await;
    let group = groups.first().expect("one group");
    let fields: Vec<(String, redis::Value)> = match group {
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|kv| {
                Some((
                    redis::from_redis_value_ref::<String>(&kv[0]).ok()?,
                    kv.get(1)?.clone(),
                ))
            })
            .collect(),
        redis::Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((redis::from_redis_value_ref::<String>(k).ok()?, v.clone())))
            .collect(),
        other => panic!("a group: {other:?}"),
    };
    let int = |name: &str| -> f64 {
        let v = fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("{name} in {fields:?}"));
        redis::from_redis_value_ref::<i64>(v).unwrap_or_else(|e| panic!("{name}: {e}")) as f64
    };
    int("lag") + int("pending")
}

/// The value of `metric`'s only series, or its error.
pub async fn served(a: &super::Adapter, metric: &str) -> Result<f64, String> {
    let (status, body) = a.metric(metric, None).await;
    match body["items"][0]["value"].as_str() {
        Some(v) if status == 200 => Ok(super::quantity(v)),
        _ => Err(format!("{status} {body}")),
    }
}
