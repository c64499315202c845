//! Label selector parsing and matching: any text is a selector or an error naming the problem,
//! never a panic; a parsed selector matches any label set without panicking, and an error
//! message stays short however long the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::apimachinery::selector::Selector;
use queue_metrics_adapter::model::Labels;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is the selector; the rest are `key=value` labels to match it against.
    let mut lines = text.lines();
    let selector = lines.next().unwrap_or_default();
    let labels: Labels = lines
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match Selector::parse(selector) {
        Ok(s) => {
            let _ = s.matches(&labels);
            let _ = s.equality_requirement().map(|(k, v)| (k.len(), v.count()));
        }
        Err(e) => assert!(e.to_string().len() < 2048, "error messages stay short"),
    }
});
