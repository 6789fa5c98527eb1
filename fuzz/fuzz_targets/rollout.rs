//! The rollout spec parser: YAML → `RawRollout` → `validate` against two declared versions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::rollout_config::RawRollout;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(raw) = serde_yaml::from_str::<RawRollout>(text) {
            if let Err(problems) = raw.validate(&["v1", "v2"]) {
                assert!(!problems.is_empty(), "an error without problems");
            }
        }
    }
});
