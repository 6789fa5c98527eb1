//! The gateway configuration parser on arbitrary UTF-8: any text gets `Ok` or a list of
//! problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Relative ONNX paths resolve under a directory that does not exist: no file access
        // beyond a failed `stat`.
        let base = std::path::Path::new("/nonexistent-switchyard-fuzz");
        if let Err(e) = switchyard_server::parse_config(text, base, "fuzz") {
            assert!(!e.problems.is_empty(), "an error without problems");
        }
    }
});
