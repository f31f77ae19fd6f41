//! The data directory's readers on arbitrary bytes behind a valid header: never panic; a log
//! read accounts for every byte (good length + torn tail = file), and a snapshot read returns
//! exactly the counts its header promised.
#![no_main]

use ip_counter::wal::format::{
    LOG_HEADER_LEN, SnapshotHeader, log_header, read_frames, read_log_header, read_snapshot,
};
use libfuzzer_sys::fuzz_target;

/// The exact counter's record lengths: version 1 logs 16 bytes, snapshots 4 and 16; version 2
/// (with windows) 20, and 8 and 20.
const LOG_RECORD: [usize; 2] = [16, 20];
const SECTIONS: [[usize; 2]; 2] = [[4, 16], [8, 20]];

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let version = 1 + (kind >> 7);
    if kind % 2 == 0 {
        let record_len = LOG_RECORD[usize::from(version - 1)];
        let mut file = log_header(1, version).to_vec();
        file.extend_from_slice(rest);
        assert_eq!(read_log_header(&file), Ok((1, version)));
        let mut records = 0;
        if let Ok(end) = read_frames(&file, LOG_HEADER_LEN, record_len, |payload| {
            assert_eq!(payload.len() % record_len, 0);
            records += payload.len() / record_len;
        }) {
            assert_eq!(end.good_len + end.torn_bytes, file.len() as u64);
            assert!(records as u64 * record_len as u64 <= end.good_len);
        }
    } else {
        let header = SnapshotHeader {
            generation: 2,
            version,
            records: [u64::from(kind >> 4 & 7), u64::from(kind >> 1 & 7)],
        };
        let mut file = header.encode().to_vec();
        file.extend_from_slice(rest);
        let sections = |v: u8| SECTIONS.get(usize::from(v).wrapping_sub(1)).copied();
        let mut read = [0u64; 2];
        if let Ok(head) = read_snapshot(&file, sections, |v, section, records| {
            read[section] += (records.len() / sections(v).unwrap()[section]) as u64;
        }) {
            assert_eq!(head, header);
            assert_eq!(read, header.records);
        }
    }
});
