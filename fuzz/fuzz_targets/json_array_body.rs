//! JSON array bodies: never panic; when the array can be read, each accepted element gives one
//! address.
#![no_main]

use ip_counter::batch::{BatchFormat, parse_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = parse_batch(BatchFormat::JsonArray, data) {
        assert_eq!(batch.observations.len() as u64, batch.report.accepted);
    }
});
