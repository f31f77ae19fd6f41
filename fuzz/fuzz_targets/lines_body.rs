//! NDJSON and access-log batch bodies: never panic, every non-blank line is accepted or
//! rejected, and each accepted line gives one address.
#![no_main]

use ip_counter::batch::{BatchFormat, LineFormat, is_blank, lines, parse_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let non_blank = lines(data).filter(|(_, line)| !is_blank(line)).count() as u64;
    for format in [LineFormat::Ndjson, LineFormat::Text] {
        let batch = parse_batch(BatchFormat::Lines(format), data).expect("lines always parse");
        assert_eq!(batch.report.accepted + batch.report.rejected, non_blank);
        assert_eq!(batch.observations.len() as u64, batch.report.accepted);
        assert!(batch.report.errors.len() as u64 <= batch.report.rejected);
    }
});
