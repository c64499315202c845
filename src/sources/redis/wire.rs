//! The connection a poll's batches travel on: commands encoded once, written in one go, and
//! the replies read straight off the socket.
//!
//! Why not the `redis` crate's pipeline for this: it encodes every command of a pipeline again
//! on every send (20,001 of them for 10,000 lists, before the first byte leaves) and parses each
//! reply through a general combinator parser; both showed in the poll's profile (BENCHMARKS.md).
//! A [`Batch`](super::batch::Batch) keeps its commands encoded, so this connection only writes
//! bytes and reads replies into the same [`Value`]s the crate makes (the rare reply types are
//! handed to the crate's own parser, so they are the crate's values exactly).
//!
//! Everything else a topology sends (scans, slot maps, sentinel queries, tracking) still goes
//! through the crate. This connection carries only batches, whose commands are reads, plus the
//! log-in (`AUTH`/`HELLO`, `SELECT`) on opening.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::primitives::Secret;
use crate::sources::source::SourceError;

/// Deepest nesting of a reply read (the `redis` crate's limit too).
const MAX_DEPTH: usize = 100;

/// Largest bulk string read: Redis's own default `proto-max-bulk-len` (512 MiB).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// Longest line read (a simple string, an error, a number): far beyond any real reply line.
const MAX_LINE: usize = 1024 * 1024;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Who a connection logs in as and what it selects.
pub struct Login {
    /// `AUTH` user name (none: the default user).
    pub username: Option<String>,
    /// `AUTH` password (none: no `AUTH`).
    pub password: Option<Secret>,
    /// The database to `SELECT` (0: none sent).
    pub db: i64,
    /// Whether to speak RESP3 (`HELLO 3`), as the source's URL asks.
    pub resp3: bool,
}

/// Where a connection goes: a host and port, and the TLS settings when it is `rediss`.
pub struct Endpoint<'a> {
    /// Host name or IP address (IPv6 without brackets).
    pub host: &'a str,
    /// TCP port.
    pub port: u16,
    /// The client TLS configuration, for TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
        }
    }
}

/// One connection to one Redis server, used by one poll at a time.
pub struct Wire {
    stream: Stream,
    /// What was read and not yet parsed; kept between exchanges for its capacity.
    buf: Vec<u8>,
    timeout: Duration,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").finish_non_exhaustive()
    }
}

impl Wire {
    /// Connects to `endpoint` and logs in, all within `timeout`; errors name `target`.
    ///
    /// # Errors
    /// [`SourceError::Connect`] when the server cannot be reached, the TLS handshake fails, or
    /// the server refuses the log-in (its own message, which holds no password).
    pub async fn open(
        endpoint: Endpoint<'_>,
        login: &Login,
        timeout: Duration,
        target: &str,
    ) -> Result<Wire, SourceError> {
        let failed = |message: String| SourceError::Connect {
            target: target.to_string(),
            message,
        };
        let opening = async {
            let tcp = TcpStream::connect((endpoint.host, endpoint.port))
                .await
                .map_err(|e| failed(e.to_string()))?;
            tcp.set_nodelay(true).map_err(|e| failed(e.to_string()))?;
            let stream = match endpoint.tls {
                None => Stream::Plain(tcp),
                Some(config) => {
                    let name = rustls::pki_types::ServerName::try_from(endpoint.host.to_string())
                        .map_err(|e| {
                        failed(format!("TLS server name {:?}: {e}", endpoint.host))
                    })?;
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| failed(format!("TLS handshake: {e}")))?;
                    Stream::Tls(Box::new(tls))
                }
            };
            let mut wire = Wire {
                stream,
                buf: Vec::new(),
                timeout,
            };
            wire.log_in(login).await.map_err(failed)?;
            Ok(wire)
        };
        tokio::time::timeout(timeout, opening)
            .await
            .unwrap_or_else(|_| Err(failed(format!("timed out after {timeout:?}"))))
    }

    async fn log_in(&mut self, login: &Login) -> Result<(), String> {
        let mut setup = Vec::new();
        let mut what = Vec::new();
        let password = login.password.as_ref().map(|p| p.expose().as_bytes());
        if login.resp3 {
            let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
            if let Some(password) = password {
                let user = login.username.as_deref().unwrap_or("default").as_bytes();
                hello.extend([b"AUTH".as_slice(), user, password]);
            }
            encode(&mut setup, &hello);
            what.push("HELLO 3");
        } else if let Some(password) = password {
            match login.username.as_deref() {
                Some(user) => encode(&mut setup, &[b"AUTH", user.as_bytes(), password]),
                None => encode(&mut setup, &[b"AUTH", password]),
            }
            what.push("AUTH");
        }
        if login.db != 0 {
            encode(&mut setup, &[b"SELECT", login.db.to_string().as_bytes()]);
            what.push("SELECT");
        }
        if what.is_empty() {
            return Ok(());
        }
        let replies = self
            .exchange_within(&setup, what.len())
            .await
            .map_err(|e| format!("log-in: {e}"))?;
        for (v, name) in replies.iter().zip(&what) {
            if let Value::ServerError(e) = v {
                let detail = e.details().unwrap_or_default();
                let hint = if *name == "HELLO 3" && e.code() == "ERR" && detail.contains("HELLO") {
                    " (the server does not speak RESP3; drop protocol=resp3 from the url)"
                } else {
                    ""
                };
                return Err(format!("{name}: {} {detail}{hint}", e.code()));
            }
        }
        Ok(())
    }

    /// Writes `packed` (`count` encoded commands) and reads one reply for each, in order,
    /// all within this connection's timeout. A command's error is its reply
    /// (`Value::ServerError`); `Err` means the stream cannot be trusted any more and the
    /// connection is to be dropped.
    ///
    /// # Errors
    /// A message naming what broke: the socket, the time, or a reply that is not RESP.
    pub async fn exchange(&mut self, packed: &[u8], count: usize) -> Result<Vec<Value>, String> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange_within(packed, count))
            .await
            .unwrap_or_else(|_| Err(format!("no complete answer within {timeout:?}")))
    }

    async fn exchange_within(&mut self, packed: &[u8], count: usize) -> Result<Vec<Value>, String> {
        self.stream
            .write_all(packed)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut replies = Vec::with_capacity(count);
        self.buf.clear();
        let mut pos = 0;
        loop {
            while replies.len() < count {
                match parse(&self.buf[pos..])
                    .map_err(|e| format!("reply {}: {e}", replies.len()))?
                {
                    Some((Some(v), used)) => {
                        replies.push(v);
                        pos += used;
                    }
                    // A push message (RESP3) between replies is no reply.
                    Some((None, used)) => pos += used,
                    None => break,
                }
            }
            if replies.len() == count {
                if pos != self.buf.len() {
                    return Err(format!(
                        "{} bytes after the last of {count} replies",
                        self.buf.len() - pos
                    ));
                }
                return Ok(replies);
            }
            self.buf.drain(..pos);
            pos = 0;
            if self.buf.len() > MAX_BULK + MAX_LINE {
                return Err("a reply larger than 512 MiB".into());
            }
            self.buf.reserve(READ_CHUNK);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "the server closed the connection after {} of {count} replies",
                    replies.len()
                ));
            }
        }
    }
}

/// Appends one command (its name first) in RESP: `*<n>` and a bulk string per argument.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    encode_header(out, args.len());
    for a in args {
        encode_arg(out, a);
    }
}

/// Appends the `*<n>` that starts a command of `n` arguments.
pub fn encode_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends one argument as a bulk string: `$<len>`, the bytes, `\r\n`.
pub fn encode_arg(out: &mut Vec<u8>, a: &[u8]) {
    out.push(b'$');
    push_decimal(out, a.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(a);
    out.extend_from_slice(b"\r\n");
}

/// Bytes [`encode`] writes for `args`.
pub fn encoded_len(args: &[&[u8]]) -> usize {
    let digits = |n: usize| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    1 + digits(args.len())
        + 2
        + args
            .iter()
            .map(|a| 1 + digits(a.len()) + 2 + a.len() + 2)
            .sum::<usize>()
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Reads one reply from the start of `buf`: `Ok(None)` while it is incomplete, else the value
/// (`None` for a RESP3 push message, which answers no command) and the bytes it took.
///
/// Values are the `redis` crate's, exactly as its parser makes them (the fuzz target
/// `redis_wire` compares the two).
///
/// # Errors
/// A message naming what is not RESP, or a reply beyond the limits (nesting, sizes).
pub fn parse(buf: &[u8]) -> Result<Option<(Option<Value>, usize)>, String> {
    if buf.first() == Some(&b'>') {
        return Ok(skip(buf, 0)?.map(|n| (None, n)));
    }
    Ok(value(buf, 0)?.map(|(v, n)| (Some(v), n)))
}

/// A line's content (without `\r\n`) starting after the type byte, and the bytes up to and
/// including its `\r\n`.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    let scan = &buf[..buf.len().min(MAX_LINE + 2)];
    match scan.iter().skip(1).position(|&b| b == b'\r') {
        Some(at) => {
            let end = at + 1;
            match buf.get(end + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some((&buf[1..end], end + 2))),
                Some(_) => Err("a line's \\r is not followed by \\n".into()),
            }
        }
        None if buf.len() > MAX_LINE => Err("a reply line longer than 1 MiB".into()),
        None => Ok(None),
    }
}

fn int(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .ok_or_else(|| format!("{:?} is not an integer", String::from_utf8_lossy(text)))
}

/// An element count of an aggregate: `None` for a RESP2 nil array (`*-1`).
fn count(text: &[u8]) -> Result<Option<usize>, String> {
    let n = int(text)?;
    Ok(usize::try_from(n).ok())
}

/// Where a value that starts `buf` ends, without building it.
fn skip(buf: &[u8], depth: usize) -> Result<Option<usize>, String> {
    if depth > MAX_DEPTH {
        return Err("replies nested deeper than 100".into());
    }
    let Some((text, head)) = line(buf)? else {
        return Ok(None);
    };
    let elements = match buf[0] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => return Ok(Some(head)),
        b'$' | b'!' | b'=' => {
            let Some(n) = count(text)? else {
                return Ok(Some(head));
            };
            if n > MAX_BULK {
                return Err(format!("a bulk string of {n} bytes (over 512 MiB)"));
            }
            return Ok(match buf.get(head + n..head + n + 2) {
                None => None,
                Some(b"\r\n") => Some(head + n + 2),
                Some(_) => return Err("a bulk string not ended by \\r\\n".into()),
            });
        }
        b'*' | b'~' | b'>' => count(text)?.unwrap_or(0),
        b'%' => count(text)?
            .unwrap_or(0)
            .checked_mul(2)
            .ok_or("a map too large")?,
        b'|' => count(text)?
            .unwrap_or(0)
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .ok_or("an attribute too large")?,
        other => return Err(format!("{:?} does not start a RESP reply", other as char)),
    };
    let mut at = head;
    for _ in 0..elements {
        match skip(&buf[at..], depth + 1)? {
            Some(n) => at += n,
            None => return Ok(None),
        }
    }
    Ok(Some(at))
}

/// Reads the value that starts `buf` and the bytes it took.
fn value(buf: &[u8], depth: usize) -> Result<Option<(Value, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err("replies nested deeper than 100".into());
    }
    let Some((text, head)) = line(buf)? else {
        return Ok(None);
    };
    let v = match buf[0] {
        b'$' => {
            let Some(n) = count(text)? else {
                return Ok(Some((Value::Nil, head)));
            };
            if n > MAX_BULK {
                return Err(format!("a bulk string of {n} bytes (over 512 MiB)"));
            }
            return Ok(match buf.get(head..head + n + 2) {
                None => None,
                Some(b) if b.ends_with(b"\r\n") => {
                    Some((Value::BulkString(b[..n].to_vec()), head + n + 2))
                }
                Some(_) => return Err("a bulk string not ended by \\r\\n".into()),
            });
        }
        b':' => Value::Int(int(text)?),
        b'+' => match std::str::from_utf8(text) {
            Ok("OK") => Value::Okay,
            Ok(s) => Value::SimpleString(s.to_string()),
            Err(_) => return Err("a simple string that is not UTF-8".into()),
        },
        b'_' => Value::Nil,
        b'#' => match text {
            b"t" => Value::Boolean(true),
            b"f" => Value::Boolean(false),
            _ => return Err("a boolean that is neither t nor f".into()),
        },
        b',' => Value::Double(
            std::str::from_utf8(text)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .ok_or("a double that is not a number")?,
        ),
        b'*' | b'~' => {
            let Some(n) = count(text)? else {
                return Ok(Some((Value::Nil, head)));
            };
            let Some((items, used)) = elements(&buf[head..], n, depth)? else {
                return Ok(None);
            };
            let v = if buf[0] == b'*' {
                Value::Array(items)
            } else {
                Value::Set(items)
            };
            return Ok(Some((v, head + used)));
        }
        b'%' => {
            let pairs = count(text)?.unwrap_or(0);
            let n = pairs.checked_mul(2).ok_or("a map too large")?;
            let Some((items, used)) = elements(&buf[head..], n, depth)? else {
                return Ok(None);
            };
            let mut it = items.into_iter();
            let mut map = Vec::with_capacity(pairs);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                map.push((k, v));
            }
            return Ok(Some((Value::Map(map), head + used)));
        }
        // Errors, verbatim strings, big numbers, attributes: rare here, and made by the
        // crate's parser from the value's bytes so they are its values exactly.
        b'-' | b'!' | b'=' | b'(' | b'|' => {
            let Some(n) = skip(buf, depth)? else {
                return Ok(None);
            };
            let v = redis::parse_redis_value(&buf[..n]).map_err(|e| e.to_string())?;
            return Ok(Some((v, n)));
        }
        other => return Err(format!("{:?} does not start a RESP reply", other as char)),
    };
    Ok(Some((v, head)))
}

/// `n` values one after another: `None` while the last is incomplete.
fn elements(buf: &[u8], n: usize, depth: usize) -> Result<Option<(Vec<Value>, usize)>, String> {
    // The count is the server's word; memory follows the bytes actually read.
    let mut items = Vec::with_capacity(n.min(buf.len() / 3 + 1));
    let mut at = 0;
    for _ in 0..n {
        match value(&buf[at..], depth + 1)? {
            Some((v, used)) => {
                items.push(v);
                at += used;
            }
            None => return Ok(None),
        }
    }
    Ok(Some((items, at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply type, RESP2 and RESP3, as the crate parses it.
    const SAMPLES: &[&[u8]] = &[
        b"+OK\r\n",
        b"+PONG\r\n",
        b"-ERR unknown command 'X'\r\n",
        b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        b":0\r\n",
        b":-42\r\n",
        b"$-1\r\n",
        b"$0\r\n\r\n",
        b"$5\r\nhello\r\n",
        b"$4\r\n\xff\x00\r\n\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$10\r\n1733101000\r\n$6\r\n123456\r\n",
        b"*2\r\n*1\r\n:1\r\n$-1\r\n",
        b"_\r\n",
        b"#t\r\n",
        b"#f\r\n",
        b",3.25\r\n",
        b",inf\r\n",
        b",-inf\r\n",
        b"%1\r\n+name\r\n$1\r\ng\r\n",
        b"~2\r\n:1\r\n:2\r\n",
        b"!21\r\nSYNTAX invalid syntax\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
        b"*1\r\n%2\r\n+name\r\n$2\r\ng1\r\n+pending\r\n:3\r\n",
    ];

    #[test]
    fn every_reply_type_is_the_value_the_crate_makes() {
        for sample in SAMPLES {
            let expected = redis::parse_redis_value(sample).expect("the crate parses it");
            let (got, used) = parse(sample).unwrap().expect("complete");
            assert_eq!(got, Some(expected), "{:?}", String::from_utf8_lossy(sample));
            assert_eq!(used, sample.len());
        }
    }

    #[test]
    fn a_reply_cut_anywhere_is_incomplete_not_an_error() {
        for sample in SAMPLES {
            for cut in 0..sample.len() {
                assert_eq!(
                    parse(&sample[..cut]),
                    Ok(None),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(sample)
                );
            }
        }
    }

    #[test]
    fn a_push_message_is_read_past_as_no_reply() {
        let push = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n";
        assert_eq!(parse(push), Ok(Some((None, push.len()))));
    }

    #[test]
    fn replies_beyond_the_limits_or_not_resp_are_errors() {
        assert!(parse(b"$536870913\r\n").unwrap_err().contains("512 MiB"));
        assert!(parse(b"?what\r\n").unwrap_err().contains("does not start"));
        assert!(parse(b":12x\r\n").unwrap_err().contains("not an integer"));
        assert!(parse(b"$3\r\nabcd\r\n").unwrap_err().contains("not ended"));
        assert!(parse(b"+a\rb\r\n").unwrap_err().contains("followed"));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deeper"));
        let long = [b"+".as_slice(), &vec![b'a'; MAX_LINE + 8]].concat();
        assert!(parse(&long).unwrap_err().contains("longer"));
        // A huge element count with nothing behind it reserves nothing and waits.
        assert_eq!(parse(b"*4000000000\r\n"), Ok(None));
    }

    #[test]
    fn commands_are_encoded_as_resp_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        let args: &[&[u8]] = &[b"LINDEX", b"queue:default", b"-1"];
        encode(&mut out, args);
        assert_eq!(
            out,
            b"*3\r\n$6\r\nLINDEX\r\n$13\r\nqueue:default\r\n$2\r\n-1\r\n"
        );
        assert_eq!(encoded_len(args), out.len());
        let long = vec![b'k'; 12_345];
        let args: &[&[u8]] = &[b"LLEN", &long];
        assert_eq!(encoded_len(args), {
            let mut o = Vec::new();
            encode(&mut o, args);
            o.len()
        });
    }
}
