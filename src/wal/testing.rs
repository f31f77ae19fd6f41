//! A toy [`Durable`] state for the log's own tests: a set of `u128` records, those below 2^32
//! snapshotted as 4-byte records in section 0, the rest as 16-byte records in section 1. That
//! the log is tested with it, and never with addresses, shows it knows nothing of them.

use std::collections::BTreeSet;
use std::io::{self, Seek, Write};

use parking_lot::Mutex;

use super::format::{SnapshotWriter, Version, records};
use super::{Durable, StorageError, Wal};

/// A set of records.
#[derive(Debug, Default)]
pub struct Toy {
    set: Mutex<BTreeSet<u128>>,
}

impl Toy {
    /// Adds `records` as a counter kind does: the new ones are written under the writer, then
    /// added. Returns how many were new.
    pub fn insert(&self, wal: &Wal<Toy>, records: &[u128]) -> Result<u64, StorageError> {
        let mut writer = wal.writer();
        let new: BTreeSet<u128> = {
            let set = self.set.lock();
            records
                .iter()
                .filter(|r| !set.contains(r))
                .copied()
                .collect()
        };
        if new.is_empty() {
            return Ok(0);
        }
        let bytes: Vec<u8> = new.iter().flat_map(|r| r.to_be_bytes()).collect();
        writer.append(&bytes)?;
        let n = new.len() as u64;
        self.set.lock().extend(new);
        Ok(n)
    }

    /// Whether it holds `record`.
    pub fn contains(&self, record: u128) -> bool {
        self.set.lock().contains(&record)
    }

    /// Every record.
    pub fn all(&self) -> BTreeSet<u128> {
        self.set.lock().clone()
    }
}

impl Durable for Toy {
    fn version(&self) -> Version {
        1
    }

    fn record_len(version: Version) -> Option<usize> {
        (version == 1).then_some(16)
    }

    fn sections(version: Version) -> Option<[usize; 2]> {
        (version == 1).then_some([4, 16])
    }

    fn replay(&self, _: Version, payload: &[u8]) {
        self.set
            .lock()
            .extend(records::<16>(payload).map(u128::from_be_bytes));
    }

    fn load(&self, _: Version, section: usize, payload: &[u8]) {
        let mut set = self.set.lock();
        match section {
            0 => set.extend(records::<4>(payload).map(|r| u128::from(u32::from_be_bytes(r)))),
            _ => set.extend(records::<16>(payload).map(u128::from_be_bytes)),
        }
    }

    fn snapshot<W: Write + Seek>(&self, out: &mut SnapshotWriter<W>) -> io::Result<()> {
        for &r in self.all().iter() {
            match u32::try_from(r) {
                Ok(small) => out.push(0, &small.to_be_bytes())?,
                Err(_) => out.push(1, &r.to_be_bytes())?,
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} records", self.set.lock().len())
    }
}
