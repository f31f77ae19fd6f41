//! Reading a data directory back into a [`Store`]: the snapshot, then every log after it, in
//! generation order. Used at start (before `/ready` turns 200) and by `ip-counter verify`.
//!
//! Reading never changes a file; [`Recovered::repair`] then cuts torn tails and removes what a
//! snapshot has made redundant, so that only what a crash can leave is ever dropped. Damage
//! anywhere else is an error naming the file and byte offset: the count is never silently
//! started over.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::format::{self, Damage, LOG_HEADER_LEN, LOG_RECORD_LEN, SnapshotHeader};
use super::{SNAPSHOT, SNAPSHOT_TMP, logs_in, sync_dir};
use crate::store::Store;

/// Why a data directory could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A file is damaged where no crash can have left it so.
    #[error(
        "{}: damaged at byte offset {offset}: {what}. Refusing to start rather than lose the \
         count; `ip-counter verify` checks the whole directory, and truncating this file to \
         {offset} bytes keeps what comes before the damage",
        file.display()
    )]
    Damaged {
        /// The damaged file.
        file: PathBuf,
        /// Where its damaged header or frame starts.
        offset: u64,
        /// What is wrong there.
        what: String,
    },
    /// A file could not be read, or a repair not written.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file or directory.
        file: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_error(file: &Path) -> impl FnOnce(io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        file: file.to_path_buf(),
        source,
    }
}

fn damaged(file: &Path) -> impl FnOnce(Damage) -> RecoveryError + '_ {
    move |Damage { offset, what }| RecoveryError::Damaged {
        file: file.to_path_buf(),
        offset,
        what,
    }
}

/// What reading a log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// The file.
    pub path: PathBuf,
    /// Its generation.
    pub generation: u64,
    /// Whole frames.
    pub frames: u64,
    /// Records in them.
    pub records: u64,
    /// Bytes up to the end of the last whole frame.
    pub good_len: u64,
    /// Bytes of a torn last frame after it, or zeros.
    pub torn_bytes: u64,
    /// Whether those bytes are zeros (allocated ahead by the writer) rather than a torn write.
    pub zeros: bool,
}

/// What a data directory held.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The snapshot's header, when there is one.
    pub snapshot: Option<SnapshotHeader>,
    /// The logs read after it, in generation order.
    pub logs: Vec<LogRead>,
    /// Logs the snapshot already includes (left by a crash before they were removed).
    pub superseded: Vec<PathBuf>,
    /// The generation a new log should have.
    pub next_generation: u64,
}

impl Recovered {
    /// Cuts each torn tail (so that later writes cannot follow a torn frame) and removes
    /// superseded logs and an unfinished snapshot.
    pub fn repair(&self, dir: &Path) -> Result<(), RecoveryError> {
        for log in self.logs.iter().filter(|log| log.torn_bytes > 0) {
            if log.zeros {
                tracing::debug!(
                    file = %log.path.display(),
                    offset = log.good_len,
                    bytes = log.torn_bytes,
                    "cutting the zeros allocated ahead of the log's end"
                );
            } else {
                tracing::warn!(
                    file = %log.path.display(),
                    offset = log.good_len,
                    bytes = log.torn_bytes,
                    "dropping a torn last write (a crash during a write leaves one)"
                );
            }
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&log.path)
                .map_err(io_error(&log.path))?;
            file.set_len(log.good_len)
                .and_then(|()| file.sync_all())
                .map_err(io_error(&log.path))?;
        }
        for path in &self.superseded {
            fs::remove_file(path).map_err(io_error(path))?;
        }
        let tmp = dir.join(SNAPSHOT_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&tmp)(e)),
        }
        sync_dir(dir).map_err(io_error(dir))
    }
}

/// Reads every file of the data directory `dir` into `store`, changing nothing on disk.
pub fn read_dir(dir: &Path, store: &Store) -> Result<Recovered, RecoveryError> {
    let logs = logs_in(dir).map_err(io_error(dir))?;
    let mut recovered = Recovered::default();
    let snapshot_path = dir.join(SNAPSHOT);
    let from = match fs::read(&snapshot_path) {
        Ok(bytes) => {
            let header = format::read_snapshot(
                &bytes,
                |v4| {
                    store.insert_bits(v4, &[]);
                },
                |v6| {
                    store.insert_bits(&mut [], v6);
                },
            )
            .map_err(damaged(&snapshot_path))?;
            recovered.snapshot = Some(header);
            header.generation
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_error(&snapshot_path)(e)),
    };

    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (generation, path) in logs {
        if generation < from {
            recovered.superseded.push(path);
            continue;
        }
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        let in_header = format::read_log_header(&bytes).map_err(damaged(&path))?;
        if in_header != generation {
            return Err(damaged(&path)(Damage {
                offset: 8,
                what: format!("the header says generation {in_header}, the name {generation}"),
            }));
        }
        let mut records = 0;
        let end = format::read_frames(&bytes, LOG_HEADER_LEN, LOG_RECORD_LEN, |payload| {
            for record in payload.chunks_exact(LOG_RECORD_LEN) {
                match format::log_record_addr(record) {
                    IpAddr::V4(a) => v4.push(a.to_bits()),
                    IpAddr::V6(a) => v6.push(a.to_bits()),
                }
            }
            records += (payload.len() / LOG_RECORD_LEN) as u64;
        })
        .map_err(damaged(&path))?;
        store.insert_bits(&mut v4, &v6);
        v4.clear();
        v6.clear();
        recovered.logs.push(LogRead {
            path,
            generation,
            frames: end.frames,
            records,
            good_len: end.good_len,
            torn_bytes: end.torn_bytes,
            zeros: end.zeros,
        });
    }
    recovered.next_generation = recovered
        .logs
        .last()
        .map_or(from, |log| log.generation + 1)
        .max(from);
    Ok(recovered)
}
