//! Clients at known paces and what they did, for the tests of rates and of workers needed: a
//! record of when each job entered or finished, a stream worker that reads and acknowledges one
//! entry, and the parts of a served answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// A stream `<prefix>jobs` with the group `workers` (created at `$`, as a deployment creates
/// it) on the shared Redis under a prefix of its own (`name`): the guard that removes the prefix's
/// keys when dropped, the stream's key, and a connection for the test's own commands.
pub async fn group_stream(name: &str) -> (super::Cleanup, String, MultiplexedConnection) {
    let clean = super::Cleanup {
        url: super::redis_url(),
        prefix: super::prefix(name),
    };
    let stream = format!("{}jobs", clean.prefix);
    let mut conn = super::connect(&clean.url).await;
    super::cmd::<String>(
        &mut conn,
        &["XGROUP", "CREATE", &stream, "workers", "$", "MKSTREAM"],
    )
    .await;
    (clean, stream, conn)
}

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

/// A RabbitMQ queue `jobs` with a publisher (20 messages a second) and a consumer that
/// acknowledges one message at a time, 10 a second: [`PacedRabbit::declare`] the queue, start the
/// adapter, then [`PacedRabbit::start`] the clients.
pub struct PacedRabbit {
    conn: lapin::Connection,
    pub published: Events,
    pub acked: Events,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PacedRabbit {
    /// Connects to `amqp_url` and declares the queue.
    pub async fn declare(amqp_url: &str) -> PacedRabbit {
        use lapin::options::QueueDeclareOptions;
        let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare(
            "jobs".into(),
            QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("declare");
        PacedRabbit {
            conn,
            published: Events::default(),
            acked: Events::default(),
            tasks: Vec::new(),
        }
    }

    /// Starts the publisher and the consumer.
    pub async fn start(&mut self) {
        use lapin::options::{
            BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        };
        let publish = self.conn.create_channel().await.expect("channel");
        let published = self.published.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                publish
                    .basic_publish(
                        "".into(),
                        "jobs".into(),
                        BasicPublishOptions::default(),
                        b"job",
                        lapin::BasicProperties::default(),
                    )
                    .await
                    .expect("publish");
                published.record();
            }
        }));
        let consume = self.conn.create_channel().await.expect("channel");
        consume
            .basic_qos(1, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut deliveries = consume
            .basic_consume(
                "jobs".into(),
                "worker".into(),
                BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("consume");
        let acked = self.acked.clone();
        self.tasks.push(tokio::spawn(async move {
            use futures_util::StreamExt as _;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while let Some(Ok(d)) = deliveries.next().await {
                tick.tick().await;
                d.ack(BasicAckOptions::default()).await.expect("ack");
                acked.record();
            }
        }));
    }

    /// Stops the clients and closes the connection.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// A producer adding 20 entries a second to `stream` and a worker of group `workers` reading
/// and acknowledging 10 a second, one at a time, each on its own connection, until stopped.
pub struct PacedStream {
    pub added: Events,
    pub acked: Events,
    producer: tokio::task::JoinHandle<()>,
    consumer: tokio::task::JoinHandle<()>,
}

impl PacedStream {
    pub fn start(url: &str, stream: &str) -> PacedStream {
        let (added, acked) = (Events::default(), Events::default());
        let producer = {
            let (url, stream, added) = (url.to_string(), stream.to_string(), added.clone());
            tokio::spawn(async move {
                let mut c = super::connect(&url).await;
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                loop {
                    tick.tick().await;
                    super::cmd::<String>(&mut c, &["XADD", &stream, "*", "job", "x"]).await;
                    added.record();
                }
            })
        };
        let consumer = {
            let (url, stream, acked) = (url.to_string(), stream.to_string(), acked.clone());
            tokio::spawn(async move {
                let mut c = super::connect(&url).await;
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    if work_one(&mut c, &stream).await {
                        acked.record();
                    }
                }
            })
        };
        PacedStream {
            added,
            acked,
            producer,
            consumer,
        }
    }

    /// Stops the worker; the producer goes on.
    pub fn stop_worker(&self) {
        self.consumer.abort();
    }

    /// Stops both.
    pub fn stop(&self) {
        self.producer.abort();
        self.consumer.abort();
    }
}
