//! gzip bodies under a decoded-size limit: never panic, never return more than the limit.
#![no_main]

use ip_counter::batch::{BodyError, gunzip_limited};
use libfuzzer_sys::fuzz_target;

const LIMIT: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    match gunzip_limited(data, LIMIT) {
        Ok(decoded) => assert!(decoded.len() as u64 <= LIMIT),
        Err(BodyError::TooLarge { limit }) => assert_eq!(limit, LIMIT),
        Err(BodyError::Unreadable(_)) => {}
    }
});
