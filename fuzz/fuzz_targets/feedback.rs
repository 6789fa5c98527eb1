//! One feedback item on arbitrary JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = switchyard_server::feedback::parse_item(&item);
    }
});
