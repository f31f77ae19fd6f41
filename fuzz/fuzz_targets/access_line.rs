//! One access-log line: never panics, and an accepted line starts with the address returned
//! (the rest of the line may be any bytes).
#![no_main]

use ip_counter::parse::{parse_access_line, parse_ip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    if let Ok(ip) = parse_access_line(line) {
        let first = line
            .split(u8::is_ascii_whitespace)
            .find(|field| !field.is_empty())
            .expect("an address field");
        let text = std::str::from_utf8(first).expect("an accepted address is UTF-8");
        assert_eq!(parse_ip(text), Some(ip));
    }
});
