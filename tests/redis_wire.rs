//! The poll's own connection (`sources::redis::wire`) against the real server: for every read
//! command a poll sends, the same replies the `redis` crate's pipeline returns (RESP2 and
//! RESP3); its log-in, `SELECT`, time limit and a connection the server closed. Each test uses
//! its own key prefix and removes its keys.

mod common;

use std::time::Duration;

use common::{Cleanup, cmd, connect, prefix};
use queue_metrics_adapter::primitives::Secret;
use queue_metrics_adapter::sources::redis::wire::{Endpoint, Login, Wire, encode};
use redis::{ConnectionAddr, IntoConnectionInfo, Value};

/// The test server's host and port, from the same URL the other tests use (without protocol).
fn server() -> (String, u16, String) {
    let url =
        std::env::var("QMA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let info = url
        .as_str()
        .into_connection_info()
        .expect("a valid test url");
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => (host.clone(), *port, url),
        other => panic!("the wire tests need a plain TCP Redis, not {other}"),
    }
}

fn login(db: i64, resp3: bool) -> Login {
    Login {
        username: None,
        password: None,
        db,
        resp3,
    }
}

async fn open(login: &Login, timeout: Duration) -> Result<Wire, String> {
    let (host, port, _) = server();
    Wire::open(
        Endpoint {
            host: &host,
            port,
            tls: None,
        },
        login,
        timeout,
        "the test server",
    )
    .await
    .map_err(|e| e.to_string())
}

fn packed(commands: &[Vec<&[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in commands {
        encode(&mut out, c);
    }
    out
}

#[tokio::test]
async fn every_read_a_poll_sends_gets_the_replies_the_crate_gets() {
    let p = prefix("wire");
    let (_, _, url) = server();
    let _clean = Cleanup {
        url: url.clone(),
        prefix: p.clone(),
    };
    let mut c = connect(&url).await;
    let list = format!("{p}list");
    let stream = format!("{p}stream");
    let zset = format!("{p}zset");
    let hash = format!("{p}hash");
    cmd::<i64>(&mut c, &["RPUSH", &list, r#"{"enqueued_at":1}"#, "two"]).await;
    cmd::<String>(&mut c, &["XADD", &stream, "1-1", "f", "v"]).await;
    cmd::<String>(&mut c, &["XADD", &stream, "2-1", "f", "v"]).await;
    cmd::<String>(&mut c, &["XGROUP", "CREATE", &stream, "g", "0"]).await;
    cmd::<Value>(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            &stream,
            ">",
        ],
    )
    .await;
    cmd::<i64>(&mut c, &["ZADD", &zset, "1.5", "a", "1700000000000", "b"]).await;
    cmd::<i64>(
        &mut c,
        &["HSET", &hash, "enqueued_at", "2024-01-01T00:00:00Z"],
    )
    .await;
    let missing = format!("{p}missing");
    let k = |s: &str| s.as_bytes().to_vec();
    let (list, stream, zset, hash, missing) =
        (k(&list), k(&stream), k(&zset), k(&hash), k(&missing));
    let commands: Vec<Vec<&[u8]>> = vec![
        vec![b"LLEN", &list],
        vec![b"LINDEX", &list, b"-1"],
        vec![b"LINDEX", &list, b"0"],
        vec![b"LLEN", &missing],
        vec![b"LINDEX", &missing, b"-1"],
        vec![b"TYPE", &stream],
        vec![b"TYPE", &missing],
        vec![b"XLEN", &stream],
        vec![b"XINFO", b"GROUPS", &stream],
        vec![b"XINFO", b"GROUPS", &missing],
        vec![b"XPENDING", &stream, b"g"],
        vec![b"XRANGE", &stream, b"(1-1", b"+", b"COUNT", b"1"],
        vec![b"ZCARD", &zset],
        vec![b"ZRANGE", &zset, b"0", b"0", b"WITHSCORES"],
        vec![b"ZCOUNT", &zset, b"-inf", b"1700000000000"],
        vec![b"HGET", &hash, b"enqueued_at"],
        vec![b"HGET", &hash, b"none"],
        // A key of another type: an error reply, which is one command's reply, not a failure.
        vec![b"LLEN", &stream],
        vec![b"ROLE"],
    ];
    for resp3 in [false, true] {
        let mut wire = open(&login(0, resp3), Duration::from_secs(5))
            .await
            .expect("opens");
        let got = wire
            .exchange(&packed(&commands), commands.len())
            .await
            .expect("answers");
        let protocol = if resp3 { "resp3" } else { "resp2" };
        let client = redis::Client::open(format!("{url}?protocol={protocol}").as_str()).unwrap();
        let mut theirs = client.get_multiplexed_async_connection().await.unwrap();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for c in &commands {
            let mut one = redis::cmd(std::str::from_utf8(c[0]).unwrap());
            for a in &c[1..] {
                one.arg(*a);
            }
            pipe.add_command(one);
        }
        let want: Vec<Value> = pipe
            .query_async(&mut theirs)
            .await
            .expect("the crate's pipeline");
        assert_eq!(got.len(), commands.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g,
                w,
                "{protocol}: reply {i} to {:?}",
                String::from_utf8_lossy(commands[i][0])
            );
        }
        assert!(
            matches!(&got[17], Value::ServerError(e) if e.code() == "WRONGTYPE"),
            "{:?}",
            got[17]
        );
        // The connection is good for the next poll.
        let again = wire
            .exchange(&packed(&commands[..1]), 1)
            .await
            .expect("again");
        assert_eq!(again, vec![Value::Int(2)]);
    }
}

#[tokio::test]
async fn it_selects_the_database_and_logs_in_or_says_why_not() {
    let p = prefix("wire-db");
    let (_, _, url) = server();
    let db3 = url.replacen("/0", "/3", 1);
    let _clean = Cleanup {
        url: db3.clone(),
        prefix: p.clone(),
    };
    let mut c = connect(&db3).await;
    let key = format!("{p}jobs");
    cmd::<i64>(&mut c, &["RPUSH", &key, "a", "b", "c"]).await;
    let llen: Vec<Vec<&[u8]>> = vec![vec![b"LLEN", key.as_bytes()]];
    let mut in_3 = open(&login(3, false), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        in_3.exchange(&packed(&llen), 1).await.unwrap(),
        vec![Value::Int(3)]
    );
    let mut in_0 = open(&login(0, true), Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        in_0.exchange(&packed(&llen), 1).await.unwrap(),
        vec![Value::Int(0)]
    );

    for resp3 in [false, true] {
        let wrong = Login {
            username: Some("qma-no-such-user".into()),
            password: Some(Secret::new("not-the-password".into())),
            db: 0,
            resp3,
        };
        let e = open(&wrong, Duration::from_secs(5))
            .await
            .expect_err("refused");
        assert!(e.contains("WRONGPASS"), "{e}");
        assert!(!e.contains("not-the-password"), "the password leaked: {e}");
    }
}

#[tokio::test]
async fn an_answer_that_does_not_come_in_time_or_a_closed_connection_is_an_error() {
    let p = prefix("wire-late");
    let (_, _, url) = server();
    let _clean = Cleanup {
        url: url.clone(),
        prefix: p.clone(),
    };
    let never = format!("{p}never");
    let mut wire = open(&login(0, false), Duration::from_millis(300))
        .await
        .unwrap();
    // BLPOP on a key nobody pushes to answers after 5 s: past the connection's 300 ms.
    let started = std::time::Instant::now();
    let e = wire
        .exchange(&packed(&[vec![b"BLPOP", never.as_bytes(), b"5"]]), 1)
        .await
        .expect_err("late");
    assert!(e.contains("within"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut wire = open(&login(0, false), Duration::from_secs(5))
        .await
        .unwrap();
    let id = match wire
        .exchange(&packed(&[vec![b"CLIENT", b"ID"]]), 1)
        .await
        .unwrap()[..]
    {
        [Value::Int(id)] => id,
        ref other => panic!("CLIENT ID: {other:?}"),
    };
    let mut c = connect(&url).await;
    cmd::<i64>(&mut c, &["CLIENT", "KILL", "ID", &id.to_string()]).await;
    let e = wire
        .exchange(&packed(&[vec![b"LLEN", never.as_bytes()]]), 1)
        .await
        .expect_err("closed");
    assert!(
        e.contains("closed") || e.contains("write") || e.contains("read"),
        "{e}"
    );
}
