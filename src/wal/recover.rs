//! Reading a data directory back into a counter kind's state ([`Durable`]): the snapshot, then
//! every segment after it, in generation order. Used at start (before `/ready` turns 200) and by
//! `ip-counter verify`.
//!
//! Reading never changes a file; [`Recovered::repair`] then cuts torn tails and removes what a
//! snapshot has made redundant, so that only what a crash can leave is ever dropped. Damage
//! anywhere else is an error naming the file and byte offset: the count is never silently
//! started over.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::crash::{self, Point};
use super::format::{self, Damage, LOG_HEADER_LEN, SnapshotHeader, Version};
use super::{Durable, SNAPSHOT, SNAPSHOT_TMP, logs_in, sync_dir};

/// Why a data directory could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A file is damaged where no crash can have left it so.
    #[error(
        "{}: damaged at byte offset {offset}: {what}. Refusing to start rather than lose the \
         count. {}",
        file.display(),
        advice(file.parent().unwrap_or(Path::new(".")), (*offset >= LOG_HEADER_LEN as u64 && is_log(file)).then_some((file, *offset)))
    )]
    Damaged {
        /// The damaged file.
        file: PathBuf,
        /// Where its damaged header or frame starts.
        offset: u64,
        /// What is wrong there.
        what: String,
    },
    /// A file the others prove was written is not there.
    #[error(
        "{}: {what}. Refusing to start rather than count from a partial directory. {}",
        dir.display(),
        advice(dir, None)
    )]
    Missing {
        /// The data directory.
        dir: PathBuf,
        /// What is missing, and how the other files show it.
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

fn is_log(file: &Path) -> bool {
    file.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| super::log_generation(n).is_some())
}

/// What an operator can do about a damaged or incomplete directory: each way is tested by
/// following it (tests/api/data_dir.rs).
fn advice(dir: &Path, truncate: Option<(&PathBuf, u64)>) -> String {
    let mut advice = format!(
        "With the service stopped, `ip-counter repair {}` keeps every address that can still be \
         read and moves the files it replaces into a damaged-<time> folder there",
        dir.display()
    );
    if let Some((file, offset)) = truncate {
        advice += &format!(
            "; or `truncate -s {offset} {}` keeps this log's frames before the damage",
            file.display()
        );
    }
    advice + "; `ip-counter verify` shows the whole directory"
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
    /// The newest log, when a crash left it before its header was written: it holds nothing.
    pub unstarted: Option<PathBuf>,
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
            crash::at(Point::Step("cut a torn tail off a log"));
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&log.path)
                .map_err(io_error(&log.path))?;
            file.set_len(log.good_len)
                .and_then(|()| file.sync_all())
                .map_err(io_error(&log.path))?;
        }
        for path in self.superseded.iter().chain(&self.unstarted) {
            crash::at(Point::Step("remove a superseded or unstarted log"));
            fs::remove_file(path).map_err(io_error(path))?;
        }
        let tmp = dir.join(SNAPSHOT_TMP);
        crash::at(Point::Step("remove an unfinished snapshot.bin.tmp"));
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&tmp)(e)),
        }
        sync_dir(dir).map_err(io_error(dir))
    }
}

/// Reads every file of the data directory `dir` into `state`, changing nothing on disk. The
/// files must prove the directory complete: the logs after the snapshot run without a gap from
/// the snapshot's own generation (from 0 without one); only the newest log may be empty or all
/// zeros, as a crash while creating it leaves it.
pub fn read_dir<S: Durable>(dir: &Path, state: &S) -> Result<Recovered, RecoveryError> {
    let logs = logs_in(dir).map_err(io_error(dir))?;
    let mut recovered = Recovered::default();
    let snapshot_path = dir.join(SNAPSHOT);
    let from = match fs::read(&snapshot_path) {
        Ok(bytes) => {
            let header = format::read_snapshot(&bytes, S::sections, |version, section, records| {
                state.load(version, section, records);
            })
            .map_err(damaged(&snapshot_path))?;
            recovered.snapshot = Some(header);
            header.generation
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_error(&snapshot_path)(e)),
    };
    let missing = |what: String| RecoveryError::Missing {
        dir: dir.to_path_buf(),
        what,
    };
    let (superseded, logs): (Vec<_>, Vec<_>) = logs.into_iter().partition(|&(g, _)| g < from);
    recovered.superseded = superseded.into_iter().map(|(_, path)| path).collect();
    match (recovered.snapshot, logs.first()) {
        (None, Some(&(first, _))) if first > 0 => {
            return Err(missing(format!(
                "{SNAPSHOT} is missing: the oldest log is generation {first}, so the \
                 generations before it were folded into a snapshot"
            )));
        }
        (Some(_), None) => {
            return Err(missing(format!(
                "log generation {from} is missing: {SNAPSHOT} includes the generations before \
                 it, and the log it was taken beside was never removed by ip-counter"
            )));
        }
        _ => {}
    }

    let newest = logs.last().map(|&(g, _)| g);
    let mut expected = from;
    for (generation, path) in logs {
        if generation != expected {
            let gap = if generation == expected + 1 {
                format!("log generation {expected} is missing")
            } else {
                format!(
                    "log generations {expected} to {} are missing",
                    generation - 1
                )
            };
            return Err(missing(format!(
                "{gap}, although {SNAPSHOT} and later logs show they were written (an older \
                 {SNAPSHOT} put back over a newer one leaves such a gap)"
            )));
        }
        expected += 1;
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        let unstarted = bytes.iter().all(|&b| b == 0);
        if unstarted
            && Some(generation) == newest
            && (recovered.snapshot.is_none() || generation > from)
        {
            recovered.unstarted = Some(path);
            // Its generation is used again for the next log, leaving no gap.
            expected = generation;
            continue;
        }
        let (in_header, _) = format::read_log_header(&bytes).map_err(damaged(&path))?;
        if in_header != generation {
            return Err(damaged(&path)(Damage {
                offset: 8,
                what: format!("the header says generation {in_header}, the name {generation}"),
            }));
        }
        let (records, end) = replay_log(&bytes, state, None);
        let end = end.map_err(damaged(&path))?;
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
    recovered.next_generation = expected;
    Ok(recovered)
}

/// Applies the records of a segment's whole frames (after its header) to `state`, up to its
/// end or its first damage; returns how many were read and where reading stopped. The records
/// are read in the header's format version, or, when the header is damaged, in `guess` (none:
/// the header's damage is the answer).
pub fn replay_log<S: Durable>(
    bytes: &[u8],
    state: &S,
    guess: Option<Version>,
) -> (u64, Result<format::End, Damage>) {
    let version = match (format::read_log_header(bytes), guess) {
        (Ok((_, version)), _) => version,
        (Err(_), Some(version)) => version,
        (Err(damage), None) => return (0, Err(damage)),
    };
    let Some(record_len) = S::record_len(version) else {
        return (0, Err(format::unknown_version(version)));
    };
    let mut records = 0;
    let start = LOG_HEADER_LEN.min(bytes.len());
    let end = format::read_frames(bytes, start, record_len, |payload| {
        state.replay(version, payload);
        records += (payload.len() / record_len) as u64;
    });
    (records, end)
}
