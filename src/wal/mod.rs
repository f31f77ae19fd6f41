//! The write-ahead log: the data directory that makes a counter survive restarts and crashes.
//!
//! It knows frames, segments, group commit, snapshots and recovery, and nothing of addresses:
//! what a record holds and how a snapshot is made is the counter kind's ([`Durable`]).
//! `DATA_DIR` holds, all in the formats of [`format`](mod@format):
//! - `LOCK`: the pid of the one process using the directory, which holds a lock (`flock`) on
//!   the directory itself, so that removing this file lets no second process in (and on this
//!   file, which older builds lock);
//! - `log-<generation>.bin`: the segments of the log, appended to through [`Wal`];
//! - `snapshot.bin`: the whole state up to some generation, replaced atomically
//!   (`snapshot.bin.tmp`, synced, renamed, directory synced).
//!
//! At start [`DataDir::open`] takes the lock before anything binds; [`DataDir::recover`] reads
//! the snapshot and the segments after it back ([`recover`]), then starts the [`Wal`] on a new
//! segment. [`repair`] rebuilds a damaged directory from what can still be read.

pub mod crash;
mod dir;
mod error;
pub mod format;
pub mod recover;
pub mod repair;
mod segment;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod threads;
mod writer;

use std::fs::{self, File};
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;

pub use dir::{DataDir, OpenError};
pub use error::{Refusal, StorageError};
use format::{SECTIONS, SnapshotWriter, Version};
pub use recover::RecoveryError;
pub use writer::{SnapshotDone, Status, Wal, Writer};

/// What a counter kind keeps in the log: the state the log's records change, and how that
/// state is snapshotted and read back. The log calls it to snapshot (on its own thread, while
/// records go on being written) and to recover.
pub trait Durable: Send + Sync + 'static {
    /// The format version this state writes its segments and snapshots in.
    fn version(&self) -> Version;
    /// Bytes of a segment record in format `version`; `None` for a version it does not read.
    fn record_len(version: Version) -> Option<usize>;
    /// Bytes of a record in each of the snapshot's sections in format `version`.
    fn sections(version: Version) -> Option<[usize; SECTIONS]>;
    /// Applies the records, in format `version`, of one whole frame of a segment, at recovery.
    fn replay(&self, version: Version, records: &[u8]);
    /// Applies the records, in format `version`, of one snapshot frame of `section`.
    fn load(&self, version: Version, section: usize, records: &[u8]);
    /// Writes the whole state, section by section. Records written meanwhile may or may not
    /// be included: the segments after the snapshot hold them too.
    fn snapshot<W: Write + Seek>(&self, out: &mut SnapshotWriter<W>) -> io::Result<()>;
    /// What it holds, in a few words, for `ip-counter verify` and `repair`.
    fn describe(&self) -> String;
}

/// The snapshot's file name.
pub const SNAPSHOT: &str = "snapshot.bin";
/// The snapshot being written.
pub const SNAPSHOT_TMP: &str = "snapshot.bin.tmp";
/// The lock file's name.
const LOCK: &str = "LOCK";

/// The path of log `generation` in `dir`.
pub fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation:020}.bin"))
}

/// The generation of a log file's name, `None` for any other file.
pub(crate) fn log_generation(name: &str) -> Option<u64> {
    name.strip_prefix("log-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()
}

/// The log files in `dir` with their generations, oldest first.
pub fn logs_in(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut logs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(generation) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(log_generation)
        {
            logs.push((generation, path));
        }
    }
    logs.sort_unstable();
    Ok(logs)
}

/// Makes a directory's entries (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a 2xx promises about the addresses it counted (`DURABILITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// The log was written (`write()` returned): survives a killed process; synced every
    /// `FSYNC_INTERVAL`.
    Buffered,
    /// The log was synced (`fdatasync`): survives a power loss.
    Fsync,
}

/// The persistence settings, validated with the rest of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATA_DIR`.
    pub dir: PathBuf,
    /// `DURABILITY`.
    pub durability: Durability,
    /// `FSYNC_INTERVAL`.
    pub fsync_interval: Duration,
    /// `SNAPSHOT_INTERVAL`.
    pub snapshot_interval: Duration,
}
