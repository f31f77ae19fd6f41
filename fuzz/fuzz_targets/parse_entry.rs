//! One JSON log entry: never panics, and an accepted entry is JSON that serde reads as an object
//! with a string `ip` (other fields ignored, numbers of any magnitude, a repeated `ip` refused),
//! whose address is the one returned.
#![no_main]

use ip_counter::parse::{parse_entry, parse_ip};
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
struct Ip {
    ip: String,
}

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = parse_entry(data) {
        let read: Ip = serde_json::from_slice(data).expect("an accepted entry is a JSON object with a string ip");
        assert_eq!(parse_ip(&read.ip), Some(entry.ip));
    }
});
