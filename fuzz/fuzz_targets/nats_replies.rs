//! The JetStream API reply readers: any bytes as a `STREAM.INFO`, `CONSUMER.INFO` or
//! `STREAM.MSG.GET` reply are a value or an error (JetStream's own, or what cannot be read), never
//! a panic. A consumer that parsed gives its filter subjects (sorted, distinct, none empty); the
//! times in a reply (a message's `time`, a consumer info's `ts`) and the input's text are read as
//! RFC 3339 into a finite time, and an age from two of them is a finite, non-negative number or
//! an error.
//!
//! The first byte picks a real reply (nats-server 2.9.10, plus 2.10's `ts` and
//! `filter_subjects`) whose `@` the rest of the input fills, so that the fields deep inside one
//! are reached from an empty corpus; the last pick is the rest of the input as the whole reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::sources::age::age_seconds;
use queue_metrics_adapter::sources::nats::api::{
    ConsumerInfo, StoredMessage, StreamInfo, parse_reply, parse_time_ms, subject_matches,
};

/// Replies with a hole `@`.
const TEMPLATES: &[&str] = &[
    // STREAM.MSG.GET: the message's store time.
    r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"embed.jobs","seq":1,"data":"eyJkb2MiOjB9","time":"@"}}"#,
    // STREAM.MSG.GET: the whole message.
    r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{@}}"#,
    // CONSUMER.INFO (2.10): the server's time of the reply, and both filter fields.
    r#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","stream_name":"EMBED","name":"embed-workers","created":"2026-12-07T13:55:53.214719039Z","config":{"durable_name":"embed-workers","ack_policy":"explicit","filter_subjects":["embed.jobs","embed.urgent"]},"delivered":{"consumer_seq":3,"stream_seq":3},"ack_floor":{"consumer_seq":1,"stream_seq":1},"num_ack_pending":2,"num_redelivered":0,"num_waiting":1,"num_pending":2,"ts":"@"}"#,
    // CONSUMER.INFO: its configuration (filters, deliver subject).
    r#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","stream_name":"EMBED","name":"embed-workers","created":"2026-12-07T13:55:53.214719039Z","config":{@},"delivered":{"consumer_seq":0,"stream_seq":0},"ack_floor":{"consumer_seq":0,"stream_seq":0},"num_ack_pending":0,"num_redelivered":0,"num_waiting":0,"num_pending":5}"#,
    // CONSUMER.INFO: its counts.
    r#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","stream_name":"EMBED","name":"embed-workers","created":"2026-12-07T13:55:53.214719039Z","config":{"durable_name":"embed-workers","filter_subject":"embed.jobs"},"delivered":{"consumer_seq":0,"stream_seq":0},"ack_floor":{"consumer_seq":0,"stream_seq":0},"num_ack_pending":@,"num_redelivered":0,"num_waiting":0,"num_pending":5}"#,
    // STREAM.INFO with a subjects_filter: its per-subject counts.
    r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","total":1,"offset":0,"limit":100000,"config":{"name":"EMBED","subjects":["embed.\u003e"]},"created":"2026-12-07T13:55:53.208151566Z","state":{"messages":6,"bytes":287,"first_seq":1,"last_seq":6,"num_subjects":2,"subjects":{@},"consumer_count":1}}"#,
    // An error reply.
    r#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","error":{"code":404,"err_code":@,"description":"consumer not found"}}"#,
];

/// The reply the input makes (a template filled with the rest of it, or the rest itself), and
/// the rest.
fn reply(data: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let (&pick, rest) = data.split_first()?;
    let reply = match TEMPLATES.get(usize::from(pick) % (TEMPLATES.len() + 1)) {
        Some(t) => {
            let (before, after) = t.split_once('@').expect("a hole");
            [before.as_bytes(), rest, after.as_bytes()].concat()
        }
        None => rest.to_vec(),
    };
    Some((reply, rest))
}

/// A time read from a reply: finite, whatever the year.
fn time_ms(text: &str) -> Option<f64> {
    let ms = parse_time_ms(text).ok()?;
    assert!(ms.is_finite(), "{text:?} read as {ms}");
    Some(ms)
}

/// The age rule over two times read from replies: a finite age of at least 0, or an error.
fn age(stored_ms: f64, now_ms: f64) {
    if let Ok(a) = age_seconds(stored_ms, now_ms, "the NATS server's clock") {
        assert!(
            a.is_finite() && a >= 0.0,
            "age {a} from {stored_ms} at {now_ms}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((reply, rest)) = reply(data) else {
        return;
    };
    let data = reply.as_slice();
    let _ = parse_reply::<StreamInfo>("STREAM.INFO.s", data);
    let consumer = parse_reply::<ConsumerInfo>("CONSUMER.INFO.s.c", data);
    if let Ok(info) = &consumer {
        let filters = info.config.filters();
        assert!(filters.iter().all(|f| !f.is_empty()), "{filters:?}");
        assert!(filters.windows(2).all(|w| w[0] < w[1]), "{filters:?}");
        if let Some(ts) = info.ts.as_deref() {
            time_ms(ts);
        }
    }
    // The message reply's body is `{"message": {...}}` (its type is private to the source):
    // the bytes as the stored message itself, and the `message` of a JSON reply as one.
    let _ = parse_reply::<StoredMessage>("STREAM.MSG.GET.s", data);
    let message = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("message").map(serde_json::Value::to_string))
        .and_then(|m| parse_reply::<StoredMessage>("STREAM.MSG.GET.s", m.as_bytes()).ok());
    if let Some(m) = &message {
        // The check of a get's subject against any filter: never a panic, and `>` takes all.
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = subject_matches(text, &m.subject);
        }
        assert!(subject_matches(">", &m.subject) || m.subject.is_empty());
    }
    if let Some(m) = message
        && let Some(stored) = time_ms(&m.time)
    {
        age(stored, 1_795_311_069_997.0);
        if let Some(now) = consumer
            .as_ref()
            .ok()
            .and_then(|c| c.ts.as_deref())
            .and_then(time_ms)
        {
            age(stored, now);
        }
    }
    // The hole's text (or the whole reply) as a time, as `time` and `ts` are read.
    if let Ok(text) = std::str::from_utf8(rest)
        && let Some(ms) = time_ms(text)
    {
        age(ms, 1_795_311_069_997.0);
    }
});
