//! The data directory's readers on arbitrary bytes behind a valid header: never panic; a log
//! read accounts for every byte (good length + torn tail = file), and a snapshot read returns
//! exactly the counts its header promised.
#![no_main]

use ip_counter::persist::format::{
    LOG_HEADER_LEN, LOG_RECORD_LEN, SnapshotHeader, log_header, read_frames, read_log_header,
    read_snapshot,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        let mut file = log_header(1).to_vec();
        file.extend_from_slice(rest);
        assert_eq!(read_log_header(&file), Ok(1));
        let mut records = 0;
        if let Ok(end) = read_frames(&file, LOG_HEADER_LEN, LOG_RECORD_LEN, |payload| {
            assert_eq!(payload.len() % LOG_RECORD_LEN, 0);
            records += payload.len() / LOG_RECORD_LEN;
        }) {
            assert_eq!(end.good_len + end.torn_bytes, file.len() as u64);
            assert!(records as u64 * LOG_RECORD_LEN as u64 <= end.good_len);
        }
    } else {
        let header = SnapshotHeader {
            generation: 2,
            ipv4: u64::from(kind >> 4),
            ipv6: u64::from(kind >> 1 & 7),
        };
        let mut file = header.encode().to_vec();
        file.extend_from_slice(rest);
        let (mut v4, mut v6) = (0u64, 0u64);
        if let Ok(read) = read_snapshot(
            &file,
            |run| v4 += run.len() as u64,
            |run| v6 += run.len() as u64,
        ) {
            assert_eq!(read, header);
            assert_eq!((v4, v6), (header.ipv4, header.ipv6));
        }
    }
});
