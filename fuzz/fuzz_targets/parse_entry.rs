//! One JSON log entry: never panics, and an accepted entry is a JSON object whose `ip` string
//! parses to the address returned.
#![no_main]

use ip_counter::parse::{parse_entry, parse_ip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = parse_entry(data) {
        let value: serde_json::Value =
            serde_json::from_slice(data).expect("an accepted entry is valid JSON");
        let ip = value["ip"].as_str().expect("an accepted entry has a string ip");
        assert_eq!(parse_ip(ip), Some(entry.ip));
    }
});
