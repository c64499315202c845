//! One Redis node's part of a poll, whatever the topology: a batch sent on its connection, a
//! pattern's `SCAN` over its keyspace, each within the node's own deadline, and the error reply
//! that stands in for a command the node did not answer. [`super::topology`], the Sentinel and
//! the Cluster all use these; none of them is named here.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::connect::{Connector, NodeAddr, describe};
use super::wire::Wire;
use crate::sources::source::SourceError;

/// Keys `SCAN` asks for per call: large enough that a big keyspace takes few round trips,
/// small enough that one call never blocks the server noticeably.
const SCAN_COUNT: &str = "1000";

/// What a pattern's `SCAN` found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The keys of the pattern's type, on every node that answered.
    pub keys: BTreeSet<String>,
    /// Whether some node did not answer: its keys are not in `keys`.
    pub partial: bool,
}

/// Sends `packed` (`count` encoded commands) as one pipeline on `wire`, or on a connection
/// `connector` opens to `node` (the `url` for `None`) when there is none, and returns a reply
/// for each. The connection is handed back only when it can be used again.
///
/// # Errors
/// [`SourceError::Connect`] when no connection can be opened; [`SourceError::Io`] naming
/// `target` when the exchange fails.
pub async fn send_batch(
    connector: &Connector,
    node: Option<&NodeAddr>,
    wire: Option<Wire>,
    packed: &[u8],
    count: usize,
    target: &str,
) -> (Option<Wire>, Result<Vec<Value>, SourceError>) {
    let mut wire = match wire {
        Some(w) => w,
        None => match connector.wire(node, target).await {
            Ok(w) => w,
            Err(e) => return (None, Err(e)),
        },
    };
    match wire.exchange(packed, count).await {
        Ok(replies) => (Some(wire), Ok(replies)),
        Err(message) => (
            None,
            Err(SourceError::Io {
                target: target.to_string(),
                message,
            }),
        ),
    }
}

/// `SCAN ... MATCH pattern TYPE ty` over one node's whole keyspace, each call within
/// `deadline` (a large keyspace takes many calls; a hung node misses the first).
///
/// # Errors
/// [`SourceError::Io`] or [`SourceError::Late`] when the node fails; `BadReply` beyond `limit`
/// keys.
pub async fn scan_node(
    conn: &mut MultiplexedConnection,
    pattern: &str,
    ty: &str,
    limit: usize,
    target: &str,
    deadline: Duration,
) -> Result<BTreeSet<String>, SourceError> {
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let call = async {
            redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg(ty)
                .query_async::<(String, Vec<Vec<u8>>)>(&mut *conn)
                .await
                .map_err(|e| SourceError::Io {
                    target: target.to_string(),
                    message: format!("SCAN {pattern:?}: {}", describe(&e)),
                })
        };
        let (next, batch) = within(deadline, || target.to_string(), call).await?;
        keys.extend(
            batch
                .into_iter()
                .map(|k| String::from_utf8_lossy(&k).into_owned()),
        );
        if keys.len() > limit {
            return Err(too_many(pattern, ty, limit));
        }
        cursor = next;
        if cursor == "0" {
            return Ok(keys);
        }
    }
}

/// The error for a pattern that matches more keys than allowed.
pub fn too_many(pattern: &str, ty: &str, limit: usize) -> SourceError {
    SourceError::BadReply {
        what: format!("pattern {pattern:?} matches more than {limit} {ty} keys; narrow it"),
    }
}

/// `op`, one node's part of a poll, within `deadline`: a node that hangs (stopped, behind a
/// partition that drops packets) costs the poll this deadline, not the whole poll. The error
/// names the node as `target` gives it. Whatever connection `op` held mid-exchange is dropped
/// with it, so a late reply is never read as the answer to a later command.
///
/// # Errors
/// `op`'s own, or [`SourceError::Late`].
pub async fn within<T>(
    deadline: Duration,
    target: impl FnOnce() -> String,
    op: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    tokio::time::timeout(deadline, op)
        .await
        .unwrap_or_else(|_| {
            Err(SourceError::Late {
                target: target(),
                after: deadline,
            })
        })
}

/// A reply that stands for a command no node answered: the series reading it report `message`.
pub fn error_reply(code: &str, message: &str) -> Value {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    redis::parse_redis_value(format!("-{code} {clean}\r\n").as_bytes())
        .unwrap_or_else(|_| Value::SimpleString(format!("{code} {clean}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_is_a_server_error_with_its_message() {
        let v = error_reply("UNREACHABLE", "node 10.0.0.3:7001: refused\r\nx");
        assert_eq!(
            super::super::reply::server_error(&v).as_deref(),
            Some("UNREACHABLE node 10.0.0.3:7001: refused  x")
        );
    }
}
