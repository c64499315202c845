//! KEDA trigger metadata: any set of keys and values is a trigger or an error naming the key,
//! never a panic. Input: `key=value` lines.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::api::keda::trigger::Trigger;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let metadata: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for need_target in [false, true] {
        match Trigger::parse(&metadata, need_target) {
            Ok(t) => {
                let _ = t.is_active(1.0);
            }
            Err(e) => assert!(e.to_string().len() < 4096),
        }
    }
});
