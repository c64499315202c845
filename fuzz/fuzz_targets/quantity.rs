//! Quantity formatting: every finite value becomes a quantity string Kubernetes accepts
//! (digits, an optional `-`, an optional `m`), and a non-finite one is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use queue_metrics_adapter::apimachinery::quantity::format_quantity;

fuzz_target!(|data: [u8; 8]| {
    let v = f64::from_le_bytes(data);
    match format_quantity(v) {
        Some(q) => {
            assert!(v.is_finite(), "{v} formatted as {q}");
            let digits = q.trim_start_matches('-').trim_end_matches('m');
            assert!(
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                "{v} -> {q:?}"
            );
        }
        None => {}
    }
});
