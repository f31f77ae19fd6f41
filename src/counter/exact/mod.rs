//! The exact counter: every distinct address kept in memory ([`AddressSet`]), each new one
//! written to the data directory's log before it is counted when persistence is on.
//!
//! Only addresses new to the set are written, and a repeat takes no lock and does no I/O: the
//! set is checked first, then again under the log's writer, so that an address any request can
//! find in the set has been written (see [`crate::wal`]'s writer). What it logs and snapshots
//! is in `durable.rs`.

mod bits;
mod durable;
mod ipv4;
mod ipv6;
mod set;

use std::io;
use std::sync::{Arc, OnceLock};

pub use bits::{Bits, Run};
pub use set::AddressSet;

use super::{Counts, Gauge, Observation};
use crate::wal::{DataDir, RecoveryError, SnapshotDone, StorageError, Wal};

/// The exact kind: the set, and its log once recovery has started it.
#[derive(Debug, Default)]
pub struct Exact {
    set: Arc<AddressSet>,
    wal: OnceLock<Arc<Wal<AddressSet>>>,
}

impl Exact {
    /// Reads `data_dir` back into the set and starts its log.
    pub(super) fn recover(&self, data_dir: &DataDir) -> Result<(), RecoveryError> {
        let wal = data_dir.recover(self.set.clone())?;
        let _ = self.wal.set(wal);
        Ok(())
    }

    pub(super) fn record_one(&self, observation: Observation) -> Result<bool, StorageError> {
        let ip = observation.ip;
        let Some(wal) = self.wal.get() else {
            return Ok(self.set.insert(ip));
        };
        if self.set.contains(ip) {
            return Ok(false);
        }
        let mut writer = wal.writer();
        if self.set.contains(ip) {
            return Ok(false);
        }
        writer.append(&durable::log_record(ip))?;
        Ok(self.set.insert(ip))
    }

    /// Each new address is written once however often the batch repeats it.
    pub(super) fn record(&self, observations: &[Observation]) -> Result<u64, StorageError> {
        let ips = observations.iter().map(|o| o.ip);
        let Some(wal) = self.wal.get() else {
            return Ok(self.set.insert_many(ips));
        };
        let mut bits = Bits::distinct(ips);
        if bits.is_empty() {
            return Ok(0);
        }
        let mut writer = wal.writer();
        self.set.retain_missing(&mut bits);
        if bits.is_empty() {
            return Ok(0);
        }
        writer.append(&durable::log_records(&bits))?;
        Ok(self.set.insert_bits(&mut bits.ipv4, &bits.ipv6))
    }

    pub(super) async fn settle(&self) -> Result<(), StorageError> {
        match self.wal.get() {
            Some(wal) if wal.must_wait() => wal.durable().await,
            _ => Ok(()),
        }
    }

    pub(super) fn counts(&self) -> Counts {
        self.set.counts()
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.set.memory_bytes()
    }

    pub(super) fn writable(&self) -> bool {
        self.wal.get().is_none_or(|wal| wal.writable())
    }

    pub(super) fn gauges(&self) -> Vec<Gauge> {
        let counts = self.set.counts();
        let mut gauges = vec![
            Gauge {
                name: "unique_ip_addresses",
                help: "Total number of unique IP addresses seen since service start",
                value: counts.total(),
            },
            Gauge {
                name: "unique_ipv4_addresses",
                help: "Unique IPv4 addresses seen since service start",
                value: counts.ipv4,
            },
            Gauge {
                name: "unique_ipv6_addresses",
                help: "Unique IPv6 addresses seen since service start",
                value: counts.ipv6,
            },
            Gauge {
                name: "ipcounter_store_memory_bytes",
                help: "Heap bytes held by the counting structures",
                value: self.set.memory_bytes() as u64,
            },
        ];
        if let Some(wal) = self.wal.get() {
            let status = wal.status();
            gauges.extend([
                Gauge {
                    name: "ipcounter_persistence_log_bytes",
                    help: "Bytes in the current address log file",
                    value: status.segment_bytes,
                },
                Gauge {
                    name: "ipcounter_persistence_writable",
                    help: "1 while new addresses can be made durable; 0 after a failed sync until a snapshot succeeds",
                    value: u64::from(status.refusing.is_none()),
                },
                Gauge {
                    name: "ipcounter_persistence_last_snapshot_timestamp_seconds",
                    help: "When the last snapshot was written, in seconds since the Unix epoch (0: none yet)",
                    value: status.last_snapshot.unwrap_or(0),
                },
            ]);
        }
        gauges
    }

    pub(super) fn snapshot(&self) -> io::Result<Option<SnapshotDone>> {
        self.wal.get().map(|wal| wal.snapshot()).transpose()
    }

    pub(super) fn close(&self) -> io::Result<()> {
        self.wal.get().map_or(Ok(()), |wal| wal.close())
    }
}
