//! The write path: [`Wal`] and its [`Writer`]. A counter kind appends its records under the
//! segment's lock and changes its state before letting go, and a request is answered only once
//! what it relies on has reached the level `DURABILITY` promises.
//!
//! Ordering is what makes the promises hold:
//! - A kind writes what is new to it, then changes its state, both while it holds the
//!   [`Writer`]. So any state a request can see has been written (buffered mode needs nothing
//!   more, even for a request that changed nothing), and a snapshot taken after switching to a
//!   new segment includes everything the older segments hold.
//! - Writes are numbered (`written`). In fsync mode a request waits until the sync thread has
//!   synced at least the number it read after recording: that covers its own write and any
//!   write whose state it saw. Requests waiting together share each `fdatasync` (group commit).
//! - A failed write is cut back off the segment and answered 503; the next write tries again. A
//!   failed sync cannot be retried (the kernel may have dropped the pages), so the log turns
//!   broken: writes are refused until a full snapshot has made the whole state durable again,
//!   which the snapshot thread retries every second.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::watch;

use super::error::{Refusal, StorageError};
use super::format::{self, MAX_FRAME_RECORDS};
use super::segment::Segment;
use super::{Durability, Durable, SNAPSHOT, Settings};

/// A segment this large is folded into a snapshot without waiting for `SNAPSHOT_INTERVAL`.
pub const SNAPSHOT_LOG_BYTES: u64 = 64 << 20;

/// How far the log is synced, for fsync-mode requests to wait on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Synced {
    pub(super) writes: u64,
    /// The segment's `refusing`, for waiters and `/metrics`.
    pub(super) refusing: Option<Refusal>,
}

/// What a finished snapshot holds.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotDone {
    /// Records written.
    pub records: u64,
    /// The file's size.
    pub bytes: u64,
    /// How long it took.
    pub took: Duration,
}

/// What `/metrics` shows of the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    /// Bytes in the current segment.
    pub segment_bytes: u64,
    /// Why writes are refused, if they are.
    pub refusing: Option<Refusal>,
    /// When the last snapshot was written (seconds since the Unix epoch), if ever.
    pub last_snapshot: Option<u64>,
}

/// The write-ahead log of a data directory for the state `S`, and the threads that sync it and
/// fold it into snapshots (`threads.rs`). See the module docs.
pub struct Wal<S> {
    pub(super) dir: PathBuf,
    /// The directory's device and inode when the log started, to notice it replaced.
    pub(super) identity: (u64, u64),
    pub(super) state: Arc<S>,
    /// Bytes of the state's records, in the version it writes.
    pub(super) record_len: usize,
    pub(super) settings: Settings,
    pub(super) segment: Mutex<Segment>,
    /// Writes since start; changed only under `segment`'s lock.
    pub(super) written: AtomicU64,
    pub(super) synced: watch::Sender<Synced>,
    pub(super) syncer: OnceLock<Thread>,
    pub(super) snapshotter: OnceLock<Thread>,
    pub(super) threads: Mutex<Vec<JoinHandle<()>>>,
    pub(super) stopping: AtomicBool,
    pub(super) snapshot_due: AtomicBool,
    /// Held while a snapshot is written: the snapshot thread's and one asked for by a kind
    /// (at its start, at a switch of `COUNT_MODE=auto`) must not share the temporary file.
    pub(super) snapshotting: Mutex<()>,
    /// When the last snapshot was written, in seconds since the Unix epoch; 0 for none.
    pub(super) last_snapshot: AtomicU64,
}

impl<S> std::fmt::Debug for Wal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("durability", &self.settings.durability)
            .finish_non_exhaustive()
    }
}

/// The segment's lock, held by a counter kind while it writes and changes its state (see the
/// module docs).
pub struct Writer<'a, S: Durable> {
    wal: &'a Wal<S>,
    segment: MutexGuard<'a, Segment>,
}

impl<S: Durable> Writer<'_, S> {
    /// Writes `records` (a whole number of records of the state's format) in as few frames as
    /// hold them, with one write.
    pub fn append(&mut self, records: &[u8]) -> Result<(), StorageError> {
        let segment = &mut *self.segment;
        let record_len = self.wal.record_len;
        segment.buf.clear();
        for payload in records.chunks(MAX_FRAME_RECORDS * record_len) {
            format::push_frame(&mut segment.buf, record_len, payload);
        }
        segment.write_buf()?;
        self.wal.written.fetch_add(1, Ordering::Release);
        if segment.len >= SNAPSHOT_LOG_BYTES && !self.wal.snapshot_due.swap(true, Ordering::Relaxed)
        {
            self.wal.wake(&self.wal.snapshotter);
        }
        Ok(())
    }
}

impl<S: Durable> Wal<S> {
    pub(super) fn new(
        dir: &Path,
        settings: Settings,
        state: Arc<S>,
        segment: Segment,
        snapshot_now: bool,
    ) -> io::Result<Wal<S>> {
        let identity = fs::metadata(dir)?;
        let record_len = S::record_len(state.version()).expect("a state reads what it writes");
        Ok(Wal {
            dir: dir.to_path_buf(),
            identity: (identity.dev(), identity.ino()),
            record_len,
            state,
            settings,
            segment: Mutex::new(segment),
            written: AtomicU64::new(0),
            synced: watch::Sender::new(Synced {
                writes: 0,
                refusing: None,
            }),
            syncer: OnceLock::new(),
            snapshotter: OnceLock::new(),
            threads: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            snapshot_due: AtomicBool::new(snapshot_now),
            snapshotting: Mutex::new(()),
            last_snapshot: AtomicU64::new(
                fs::metadata(dir.join(SNAPSHOT))
                    .and_then(|m| m.modified())
                    .map_or(0, unix_seconds),
            ),
        })
    }

    /// Takes the segment's lock for one write.
    pub fn writer(&self) -> Writer<'_, S> {
        Writer {
            wal: self,
            segment: self.segment.lock(),
        }
    }

    /// Whether requests must wait for [`Wal::durable`] before answering.
    pub fn must_wait(&self) -> bool {
        self.settings.durability == Durability::Fsync
    }

    /// Waits until every write so far is on stable storage: all a request has recorded, and
    /// every write whose state it saw.
    pub async fn durable(&self) -> Result<(), StorageError> {
        let target = self.written.load(Ordering::Acquire);
        let mut synced = self.synced.subscribe();
        let now = *synced.borrow();
        if now.writes >= target {
            return Ok(());
        }
        if let Some(why) = now.refusing {
            return Err(why.into());
        }
        self.wake(&self.syncer);
        match synced
            .wait_for(|s| s.writes >= target || s.refusing.is_some())
            .await
        {
            Ok(s) if s.writes >= target => Ok(()),
            Ok(s) => Err(s.refusing.unwrap_or(Refusal::Broken).into()),
            Err(_) => Err(StorageError::Broken),
        }
    }

    pub(super) fn wake(&self, thread: &OnceLock<Thread>) {
        if let Some(thread) = thread.get() {
            thread.unpark();
        }
    }

    /// A failed sync cannot be retried (the kernel may have dropped the pages): the log is
    /// broken until a snapshot has made the whole state durable again.
    pub(super) fn sync_failed(&self, e: &io::Error) {
        tracing::error!(error = %e, "syncing the log failed; refusing new addresses until a snapshot succeeds");
        self.refuse(Refusal::Broken);
    }

    /// Refuses writes until a snapshot repairs the log (`Broken`), or the directory is back
    /// (`Lost`).
    pub(super) fn refuse(&self, why: Refusal) {
        self.segment.lock().refusing = Some(why);
        self.synced.send_modify(|s| s.refusing = Some(why));
        self.wake(&self.snapshotter);
    }

    /// The log's state for `/metrics`.
    pub fn status(&self) -> Status {
        let last = self.last_snapshot.load(Ordering::Relaxed);
        Status {
            segment_bytes: self.segment.lock().len,
            refusing: self.synced.borrow().refusing,
            last_snapshot: (last > 0).then_some(last),
        }
    }

    /// Whether writes are accepted (see [`Refusal`]).
    pub fn writable(&self) -> bool {
        self.synced.borrow().refusing.is_none()
    }
}

/// Seconds since the Unix epoch.
pub(super) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
