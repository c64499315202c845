//! A fixed-rate HTTP/1.1 GET load for the soak test (`scripts/soak.sh`): `rate` requests a
//! second spread over `connections` keep-alive connections, for `seconds`. wrk drives as fast as
//! it can; a soak needs a steady, known load. Latency is measured from when each request was
//! sent; how late a request was sent (a connection still waiting for a slow answer when its next
//! request was due) is reported apart, as `max_lag_us`, so a stall shows instead of silently
//! lowering the rate. (Measuring from the due time would add the runtime's 1 ms timer
//! granularity to every request.)
//!
//! Usage: `cargo run --release --example fixed_rate_get -- <http://host:port/path> <rate> <connections> <seconds>`
//! Prints one line: `fixed_rate requests=… ok=… errors=… rate=… p50_us=… p99_us=… p999_us=… max_us=… max_lag_us=…`
//! and exits non-zero if any request failed (a status other than 200, a broken connection, or
//! no answer within 5 s).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Latencies in µs, bucketed: 1 µs wide to 1 ms, then 1 % wide (log-linear), enough for p99.9.
struct Histogram {
    counts: Vec<u64>,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; 1000 + 1400],
            max: 0,
        }
    }

    fn bucket(us: u64) -> usize {
        if us < 1000 {
            us as usize
        } else {
            (1000 + ((us as f64 / 1000.0).ln() / 1.01f64.ln()) as usize).min(2399)
        }
    }

    fn lower(bucket: usize) -> u64 {
        if bucket < 1000 {
            bucket as u64
        } else {
            (1000.0 * 1.01f64.powi((bucket - 1000) as i32)) as u64
        }
    }

    fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
        self.max = self.max.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.max = self.max.max(other.max);
    }

    fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.counts.iter().sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want && *c > 0 {
                return Self::lower(i);
            }
        }
        self.max
    }
}

struct Outcome {
    ok: u64,
    errors: u64,
    latencies: Histogram,
    /// The latest any request was sent after it was due, in µs.
    max_lag_us: u64,
}

/// Reads one response off `stream` (headers, then `content-length` bytes); returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .map_err(|_| std::io::Error::other("headers are not UTF-8"))?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("no status"))?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            let total = end + 4 + length;
            while buf.len() < total {
                read_more(stream, buf).await?;
            }
            buf.drain(..total);
            return Ok(status);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::Error::other("connection closed"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

async fn connection(
    addr: String,
    request: Vec<u8>,
    period: Duration,
    offset: Duration,
    until: Instant,
) -> Outcome {
    let mut out = Outcome {
        ok: 0,
        errors: 0,
        latencies: Histogram::new(),
        max_lag_us: 0,
    };
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut due = Instant::now() + offset;
    while due < until {
        tokio::time::sleep_until(due.into()).await;
        if stream.is_none() {
            match TcpStream::connect(&addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                    buf.clear();
                }
                Err(_) => {
                    out.errors += 1;
                    due += period;
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected above");
        let sent = Instant::now();
        // Lateness beyond the timer's own millisecond granularity is a stall.
        out.max_lag_us = out
            .max_lag_us
            .max(sent.saturating_duration_since(due).as_micros() as u64);
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            s.write_all(&request).await?;
            read_response(s, &mut buf).await
        })
        .await;
        match answer {
            Ok(Ok(200)) => {
                out.ok += 1;
                out.latencies.record(sent.elapsed().as_micros() as u64);
            }
            Ok(Ok(_)) => out.errors += 1,
            Ok(Err(_)) | Err(_) => {
                out.errors += 1;
                stream = None;
            }
        }
        due += period;
    }
    out
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, rate, connections, seconds] = args.as_slice() else {
        eprintln!("usage: fixed_rate_get <http://host:port/path> <rate> <connections> <seconds>");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("rate: requests per second");
    let connections: u32 = connections.parse().expect("connections: a number");
    let seconds: f64 = seconds.parse().expect("seconds: a number");
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n")
            .into_bytes();
    let period = Duration::from_secs_f64(f64::from(connections) / rate);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            tokio::spawn(connection(
                addr.to_string(),
                request.clone(),
                period,
                period * i / connections,
                until,
            ))
        })
        .collect();
    let mut total = Outcome {
        ok: 0,
        errors: 0,
        latencies: Histogram::new(),
        max_lag_us: 0,
    };
    for t in tasks {
        let o = t.await.expect("connection task");
        total.ok += o.ok;
        total.errors += o.errors;
        total.latencies.merge(&o.latencies);
        total.max_lag_us = total.max_lag_us.max(o.max_lag_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = &total.latencies;
    println!(
        "fixed_rate requests={} ok={} errors={} rate={:.0} p50_us={} p99_us={} p999_us={} max_us={} max_lag_us={}",
        total.ok + total.errors,
        total.ok,
        total.errors,
        (total.ok + total.errors) as f64 / elapsed,
        h.quantile(0.50),
        h.quantile(0.99),
        h.quantile(0.999),
        h.max,
        total.max_lag_us
    );
    if total.errors > 0 {
        std::process::exit(1);
    }
}
