//! The poll's own reply reader (`sources::redis::wire::parse`), against the `redis` crate's
//! parser: any bytes are a value, "incomplete" or an error, never a panic; a value it reads is
//! the value the crate reads from the same bytes; and a value cut short is only ever
//! "incomplete".
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::sources::redis::wire::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((value, used))) = parse(data) else {
        return;
    };
    assert!(used > 0 && used <= data.len());
    let frame = &data[..used];
    if let Some(value) = value {
        if let Ok(expected) = redis::parse_redis_value(frame) {
            // Compared as printed, so that a NaN double equals itself.
            assert_eq!(
                format!("{value:?}"),
                format!("{expected:?}"),
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
    }
    for cut in [0, used / 2, used - 1] {
        assert_eq!(parse(&frame[..cut]), Ok(None), "cut at {cut}");
    }
});
