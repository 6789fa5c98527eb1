//! The inference request reader on arbitrary JSON, in both protocols.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_server::protocol::{request_rows, Wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        for wire in [Wire::V2, Wire::V1] {
            // Only "no panic" is asserted: KServe v1 `instances` may be ragged today
            // (`[[1, 2, 0], [3, 4]]` gives rows of 3 and 2 values), left to the backend.
            let _ = request_rows(wire, &body);
        }
    }
});
