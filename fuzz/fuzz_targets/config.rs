//! The config loader: any YAML is a validated config or an error naming the field, never a
//! panic (secret files and variables it names may be missing: that is an error too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_yaml(text, std::path::Path::new("fuzz.yaml")) {
        let _ = e.to_string();
    }
});
