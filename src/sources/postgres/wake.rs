//! Waking the poll when a library notifies a new job: a second session that `LISTEN`s on the
//! libraries' channels (graphile-worker `jobs:insert`, Procrastinate
//! `procrastinate_any_queue_v1`, Oban `<prefix>.oban_insert`, River `<schema>.river_insert`,
//! GoodJob `good_job`). A notification only wakes the poll, which reads the tables as always:
//! its payload is never a number. `LISTEN` needs no privilege beyond connecting and changes
//! nothing; a hot standby refuses it, and then the source is polled only.

use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use super::config::{Endpoint, PostgresSourceConfig};
use super::connect;
use crate::wake::WakeSignal;

/// The listening session: opened at the first poll, and by itself again [`RETRY_AFTER`] after
/// it ends (a server restarted, a standby that refuses `LISTEN`), not at a poll: a source
/// polled hourly would otherwise lose its wake for the hour.
pub struct Listener {
    source: String,
    channels: Vec<String>,
    signal: WakeSignal,
    task: Option<JoinHandle<()>>,
}

/// The time between the end of a listening session and the next try.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

impl Listener {
    /// A listener for `channels`, waking `signal`; it connects at the first [`Listener::ensure`].
    pub fn new(source: &str, channels: Vec<String>, signal: WakeSignal) -> Self {
        Listener {
            source: source.to_string(),
            channels,
            signal,
            task: None,
        }
    }

    /// Starts the listening task unless it runs: called at each poll.
    pub fn ensure(
        &mut self,
        conn: &PostgresSourceConfig,
        endpoint: &Endpoint,
        statement: Duration,
    ) {
        if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (conn, endpoint) = (conn.clone(), endpoint.clone());
        let (source, channels, signal) = (
            self.source.clone(),
            self.channels.clone(),
            self.signal.clone(),
        );
        self.task = Some(tokio::spawn(async move {
            loop {
                let why = listen(&conn, &endpoint, statement, &channels, &signal).await;
                signal.set_watching(false);
                tracing::warn!(source = %source, reason = %why, "PostgreSQL LISTEN session ended; polling only until it is opened again (in 30 s)");
                // Not a wake here: a poll woken while the server goes down fails, and a failing
                // source backs off and ignores wakes.
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }));
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// `channel` as a quoted identifier, as `LISTEN` takes it (`jobs:insert` needs the quotes).
pub fn quoted(channel: &str) -> String {
    format!("\"{}\"", channel.replace('"', "\"\""))
}

/// Listens until the session ends; returns why it ended.
async fn listen(
    conn: &PostgresSourceConfig,
    endpoint: &Endpoint,
    statement: Duration,
    channels: &[String],
    signal: &WakeSignal,
) -> String {
    let (client, mut connection) =
        match connect::open(conn, endpoint, statement, statement * 2).await {
            Ok(pair) => pair,
            Err(e) => return e.to_string(),
        };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    // The connection is driven here; a notification wakes the poll.
    let driver = {
        let signal = signal.clone();
        tokio::spawn(async move {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => signal.wake(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = tx.send(Err(connect::describe(&e)));
                        return;
                    }
                    None => {
                        let _ = tx.send(Err("the server closed the session".into()));
                        return;
                    }
                }
            }
        })
    };
    let sql: Vec<String> = channels
        .iter()
        .map(|c| format!("LISTEN {}", quoted(c)))
        .collect();
    let listened = tokio::time::timeout(statement * 2, client.batch_execute(&sql.join("; "))).await;
    let why = match listened {
        Ok(Ok(())) => {
            signal.set_watching(true);
            // Jobs inserted while nobody listened (across a restart, say) are read now.
            signal.wake();
            match rx.recv().await {
                Some(Err(e)) => e,
                _ => "the session ended".into(),
            }
        }
        Ok(Err(e)) => format!("LISTEN refused: {}", connect::describe(&e)),
        Err(_) => format!("LISTEN not answered within {:?}", statement * 2),
    };
    driver.abort();
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_quoted_identifiers() {
        assert_eq!(quoted("jobs:insert"), "\"jobs:insert\"");
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }
}
