//! A kind's data directory once recovery has started its log ([`Log`]): what every kind that
//! writes one does alike with it (the durability wait, readiness, gauges, snapshot, close), so
//! that each kind owns only what it writes.

use std::io;
use std::sync::{Arc, OnceLock};

use super::Gauge;
use crate::wal::{Durable, SnapshotDone, StorageError, Wal};

/// The log of a kind's state `S`: none without a data directory, or until it is recovered.
#[derive(Debug)]
pub(super) struct Log<S>(OnceLock<Arc<Wal<S>>>);

impl<S: Durable> Log<S> {
    pub(super) fn new() -> Log<S> {
        Log(OnceLock::new())
    }

    /// Set once, by recovery.
    pub(super) fn start(&self, wal: Arc<Wal<S>>) {
        let _ = self.0.set(wal);
    }

    pub(super) fn get(&self) -> Option<&Arc<Wal<S>>> {
        self.0.get()
    }

    /// Returns once what was recorded is as durable as `DURABILITY` promises.
    pub(super) async fn settle(&self) -> Result<(), StorageError> {
        match self.0.get() {
            Some(wal) if wal.must_wait() => wal.durable().await,
            _ => Ok(()),
        }
    }

    /// Whether records can be made durable now; always without a data directory.
    pub(super) fn writable(&self) -> bool {
        self.0.get().is_none_or(|wal| wal.writable())
    }

    /// The data directory's gauges, when there is one.
    pub(super) fn gauges(&self) -> Vec<Gauge> {
        let Some(wal) = self.0.get() else {
            return Vec::new();
        };
        let status = wal.status();
        vec![
            Gauge {
                name: "ipcounter_persistence_log_bytes",
                help: "Bytes in the current address log file".into(),
                value: status.segment_bytes,
            },
            Gauge {
                name: "ipcounter_persistence_writable",
                help: "1 while new addresses can be made durable; 0 after a failed sync until a snapshot succeeds".into(),
                value: u64::from(status.refusing.is_none()),
            },
            Gauge {
                name: "ipcounter_persistence_last_snapshot_timestamp_seconds",
                help: "When the last snapshot was written, in seconds since the Unix epoch (0: none yet)".into(),
                value: status.last_snapshot.unwrap_or(0),
            },
        ]
    }

    pub(super) fn snapshot(&self) -> io::Result<Option<SnapshotDone>> {
        self.0.get().map(|wal| wal.snapshot()).transpose()
    }

    pub(super) fn close(&self) -> io::Result<()> {
        self.0.get().map_or(Ok(()), |wal| wal.close())
    }
}
