//! The floor a poll of Redis lists is measured against (`scripts/bench-vs-baselines.sh`): the
//! same commands the adapter sends for `length` + `oldest_age_seconds` of N lists (`TIME`, then
//! `LLEN` and `LINDEX -1` per list), written as one pipeline on a plain TCP socket, and the
//! replies only counted, never parsed into values. Nothing but the round trip and reading the
//! bytes: what a poll cannot beat.
//!
//! Usage: `cargo run --release --example raw_resp_pipeline -- <host:port> <key prefix> <lists> <runs> [pause ms]`
//! (keys are `<prefix>queue:00000` …, as the script loads them). With a pause between round
//! trips the floor is measured at the adapter's own cadence (a poll a second): caches and CPU
//! frequency then start each round trip as cold as a poll starts. Prints one line:
//! `raw_pipeline lists=N commands=C runs=R mean_ms=… median_ms=… min_ms=… cpu_ms_per_run=…`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

fn command(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        buf.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        buf.extend_from_slice(p);
        buf.extend_from_slice(b"\r\n");
    }
}

/// Reads `replies` complete top-level replies, counting them: arrays by their element count,
/// bulk strings by skipping their length. Errors on anything that is not RESP2.
fn count_replies(r: &mut impl BufRead, replies: usize) -> std::io::Result<usize> {
    let mut line = Vec::with_capacity(64);
    let mut done = 0;
    // Elements still owed by open arrays, innermost last.
    let mut owed: Vec<usize> = Vec::new();
    while done < replies {
        line.clear();
        r.read_until(b'\n', &mut line)?;
        if line.len() < 3 {
            return Err(std::io::Error::other("short reply line"));
        }
        let n = || -> std::io::Result<i64> {
            std::str::from_utf8(&line[1..line.len() - 2])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad length"))
        };
        let complete = match line[0] {
            b'+' | b'-' | b':' => true,
            b'$' => {
                let len = n()?;
                if len >= 0 {
                    let mut skip = (len as u64) + 2;
                    while skip > 0 {
                        let chunk = r.fill_buf()?;
                        let take = chunk.len().min(skip as usize);
                        r.consume(take);
                        skip -= take as u64;
                    }
                }
                true
            }
            b'*' => {
                let len = n()?;
                if len > 0 {
                    owed.push(len as usize);
                    false
                } else {
                    true
                }
            }
            _ => return Err(std::io::Error::other("not a RESP2 reply")),
        };
        if complete {
            // Close every array this element completes.
            let mut top = true;
            while let Some(last) = owed.last_mut() {
                *last -= 1;
                if *last > 0 {
                    top = false;
                    break;
                }
                owed.pop();
            }
            if top {
                done += 1;
            }
        }
    }
    Ok(done)
}

fn cpu_ns() -> u64 {
    // This process's CPU time (all threads), from /proc: utime + stime in clock ticks is too
    // coarse, so read the scheduler's nanoseconds.
    let mut s = String::new();
    std::fs::File::open("/proc/self/schedstat")
        .and_then(|mut f| f.read_to_string(&mut s))
        .expect("/proc/self/schedstat");
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (addr, prefix, lists, runs, pause_ms) = match args.as_slice() {
        [_, a, p, l, r] => (a, p, l, r, "0"),
        [_, a, p, l, r, pause] => (a, p, l, r, pause.as_str()),
        _ => {
            eprintln!(
                "usage: raw_resp_pipeline <host:port> <key prefix> <lists> <runs> [pause ms]"
            );
            std::process::exit(2);
        }
    };
    let pause = std::time::Duration::from_millis(pause_ms.parse().expect("pause: milliseconds"));
    let lists: usize = lists.parse().expect("lists: a number");
    let runs: usize = runs.parse().expect("runs: a number");
    let mut batch = Vec::new();
    command(&mut batch, &[b"TIME"]);
    for i in 0..lists {
        let key = format!("{prefix}queue:{i:05}");
        command(&mut batch, &[b"LLEN", key.as_bytes()]);
        command(&mut batch, &[b"LINDEX", key.as_bytes(), b"-1"]);
    }
    let commands = 1 + 2 * lists;
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut times = Vec::with_capacity(runs);
    // One warm-up round trip, not counted.
    writer.write_all(&batch)?;
    count_replies(&mut reader, commands)?;
    let cpu_before = cpu_ns();
    for _ in 0..runs {
        std::thread::sleep(pause);
        let start = Instant::now();
        writer.write_all(&batch)?;
        let got = count_replies(&mut reader, commands)?;
        assert_eq!(got, commands);
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    // Sleeping costs no CPU, so the pauses do not dilute this.
    let cpu_ms = (cpu_ns() - cpu_before) as f64 / 1e6 / runs as f64;
    let mean = times.iter().sum::<f64>() / runs as f64;
    times.sort_by(f64::total_cmp);
    println!(
        "raw_pipeline lists={lists} commands={commands} runs={runs} pause_ms={pause_ms} mean_ms={mean:.3} median_ms={:.3} min_ms={:.3} cpu_ms_per_run={cpu_ms:.3}",
        times[runs / 2],
        times[0]
    );
    Ok(())
}
