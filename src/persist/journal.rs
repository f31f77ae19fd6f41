//! The write path of persistence: every address new to the store is appended to the log before
//! it is counted, and a request is answered only once what it relies on has reached the level
//! `DURABILITY` promises.
//!
//! Ordering is what makes the promises hold:
//! - A new address is written to the log, then inserted into the store, both under the log's
//!   lock. So an address any request can find in the store has been written (buffered mode
//!   needs nothing more, even for a repeat), and a snapshot taken after switching to a new log
//!   includes everything the older logs hold.
//! - Frames are numbered as they are written ([`Journal`]'s `written`). In fsync mode a request
//!   waits until the syncer thread has synced at least the number it read after counting: that
//!   covers its own frame and the frame of any address it found already present. Requests
//!   waiting together share each `fdatasync` (group commit).
//! - A failed write is cut back off the log and answered 503; the next write tries again. A
//!   failed sync cannot be retried (the kernel may have dropped the pages), so the journal
//!   turns broken: new addresses are refused until a full snapshot has made everything in
//!   memory durable again, which the snapshot thread retries every second.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::crash::{self, Point};
use super::format::{self, LOG_RECORD_LEN, MAX_FRAME_RECORDS, SnapshotWriter};
use super::{Durability, SNAPSHOT, SNAPSHOT_TMP, Settings, log_path, logs_in, sync_dir};
use crate::store::{Bits, Run, Store};

/// Zeros written ahead of the log's end at a time (see `Log::allocated`).
const ALLOCATE_AHEAD: usize = 64 << 10;

/// A log this large is folded into a snapshot without waiting for `SNAPSHOT_INTERVAL`.
pub const SNAPSHOT_LOG_BYTES: u64 = 64 << 20;

/// How soon a failed snapshot is tried again while the log is broken (writes are refused until
/// one succeeds).
const RETRY: Duration = Duration::from_secs(1);

/// How soon a failed periodic snapshot is tried again (the log goes on meanwhile).
const RETRY_SNAPSHOT: Duration = Duration::from_secs(30);

/// Why an address could not be made durable; answered 503 `storage_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The log write failed (disk full, file size limit, I/O error).
    #[error("the address could not be written to the log: {0}")]
    Write(io::Error),
    /// A sync failed, or the log file was removed, and the snapshot that repairs it has not
    /// succeeded yet.
    #[error("the data directory could not be synced to disk; retrying")]
    Broken,
    /// The data directory was removed or replaced while the service ran.
    #[error(
        "the data directory was removed or replaced while the service ran; nothing can be made \
         durable until it is back (restart the service to start on the directory there now)"
    )]
    Lost,
    /// Recovery at start has not finished.
    #[error("the data directory is still being read back; not ready for writes")]
    Recovering,
}

/// The log file being appended to.
struct Log {
    file: Arc<File>,
    path: PathBuf,
    generation: u64,
    /// End of the last whole frame: where the next write goes.
    len: u64,
    /// The file's size: past `len` it holds zeros written ahead, so that appending does not
    /// change the size and `fdatasync` need not commit the file system's journal each time
    /// (`make durability-cost`). Recovery drops the zeros.
    allocated: u64,
    /// A failed write may have left part of a frame past `len`, and cutting it failed too.
    cut_pending: bool,
    /// Why new addresses are refused, if they are; see the module docs.
    refusing: Option<Refusal>,
    /// Frames being encoded.
    buf: Vec<u8>,
}

impl Log {
    /// Appends the frames in `buf` at `len`, first writing zeros ahead when it would pass
    /// `allocated`; on failure cuts the file back to `len`.
    fn write_buf(&mut self) -> Result<(), StorageError> {
        if let Some(why) = self.refusing {
            return Err(why.into());
        }
        if self.cut_pending {
            self.cut().map_err(StorageError::Write)?;
            self.cut_pending = false;
        }
        let end = self.len + self.buf.len() as u64;
        let written = if end > self.allocated && self.buf.len() < ALLOCATE_AHEAD {
            self.write_at(&[0; ALLOCATE_AHEAD], self.allocated)
                .map(|()| self.allocated += ALLOCATE_AHEAD as u64)
                .and_then(|()| self.write_at(&self.buf, self.len))
        } else {
            self.write_at(&self.buf, self.len)
        };
        match written {
            Ok(()) => {
                self.len = end;
                self.allocated = self.allocated.max(end);
                Ok(())
            }
            Err(e) => {
                self.cut_pending = self.cut().is_err();
                Err(StorageError::Write(e))
            }
        }
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        crash::at(Point::Write {
            path: &self.path,
            offset,
            bytes,
        });
        self.file.write_all_at(bytes, offset)
    }

    /// Cuts the file back to the end of its last whole frame.
    fn cut(&mut self) -> io::Result<()> {
        crash::at(Point::Step("cut a failed write off the log"));
        self.allocated = self.len;
        self.file.set_len(self.len)
    }
}

/// Why the journal refuses new addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A sync failed, or the log file was removed: a snapshot of the whole store repairs it.
    Broken,
    /// The data directory was removed or replaced: writes wait for it to be back.
    Lost,
}

impl From<Refusal> for StorageError {
    fn from(why: Refusal) -> StorageError {
        match why {
            Refusal::Broken => StorageError::Broken,
            Refusal::Lost => StorageError::Lost,
        }
    }
}

/// How far the log is synced, for fsync-mode requests to wait on.
#[derive(Debug, Clone, Copy)]
struct Synced {
    frames: u64,
    /// The log's `refusing`, for waiters and `/metrics`.
    refusing: Option<Refusal>,
}

/// What a finished snapshot holds.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotDone {
    /// Addresses written.
    pub addresses: u64,
    /// The file's size.
    pub bytes: u64,
    /// How long it took.
    pub took: Duration,
}

/// The address log of a data directory, and the threads that sync it and fold it into
/// snapshots. See the module docs.
pub struct Journal {
    dir: PathBuf,
    /// The directory's device and inode when the journal started, to notice it replaced.
    identity: (u64, u64),
    store: Arc<Store>,
    settings: Settings,
    log: Mutex<Log>,
    /// Frames written since start; changed only under `log`'s lock.
    written: AtomicU64,
    synced: watch::Sender<Synced>,
    syncer: OnceLock<Thread>,
    snapshotter: OnceLock<Thread>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
    snapshot_due: AtomicBool,
    /// When the last snapshot was written, in seconds since the Unix epoch; 0 for none.
    last_snapshot: AtomicU64,
}

/// What `/metrics` shows of the journal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    /// Bytes in the current log file.
    pub log_bytes: u64,
    /// Why new addresses are refused, if they are.
    pub refusing: Option<Refusal>,
    /// When the last snapshot was written (seconds since the Unix epoch), if ever.
    pub last_snapshot: Option<u64>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("durability", &self.settings.durability)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Starts log `generation` in `dir` (recovery has read everything before it into `store`)
    /// and the sync and snapshot threads. `snapshot_now` asks for a snapshot at once, to fold
    /// the logs recovery replayed.
    pub fn start(
        dir: &Path,
        settings: Settings,
        store: Arc<Store>,
        generation: u64,
        snapshot_now: bool,
    ) -> io::Result<Arc<Journal>> {
        let identity = fs::metadata(dir)?;
        let (file, path) = create_log(dir, generation)?;
        let journal = Arc::new(Journal {
            dir: dir.to_path_buf(),
            identity: (identity.dev(), identity.ino()),
            store,
            settings,
            log: Mutex::new(Log {
                file: Arc::new(file),
                path,
                generation,
                len: format::LOG_HEADER_LEN as u64,
                allocated: format::LOG_HEADER_LEN as u64,
                cut_pending: false,
                refusing: None,
                buf: Vec::new(),
            }),
            written: AtomicU64::new(0),
            synced: watch::Sender::new(Synced {
                frames: 0,
                refusing: None,
            }),
            syncer: OnceLock::new(),
            snapshotter: OnceLock::new(),
            threads: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            snapshot_due: AtomicBool::new(snapshot_now),
            last_snapshot: AtomicU64::new(
                fs::metadata(dir.join(SNAPSHOT))
                    .and_then(|m| m.modified())
                    .map_or(0, unix_seconds),
            ),
        });
        let weak = Arc::downgrade(&journal);
        let sync = run_thread(weak.clone(), |journal| journal.sync_step());
        let mut next_snapshot = Instant::now() + journal.settings.snapshot_interval;
        let snapshot = run_thread(weak, move |journal| {
            journal.snapshot_step(&mut next_snapshot)
        });
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>, thread: &OnceLock<Thread>| {
            let handle = std::thread::Builder::new().name(name.into()).spawn(run)?;
            let _ = thread.set(handle.thread().clone());
            journal.threads.lock().push(handle);
            io::Result::Ok(())
        };
        spawn("ip-counter-sync", Box::new(sync), &journal.syncer)?;
        spawn(
            "ip-counter-snapshot",
            Box::new(snapshot),
            &journal.snapshotter,
        )?;
        Ok(journal)
    }

    /// Counts `ip`, writing it to the log first when it is new; returns whether it was new.
    /// Repeats take no lock and write nothing.
    pub fn insert(&self, ip: IpAddr) -> Result<bool, StorageError> {
        if self.store.contains(ip) {
            return Ok(false);
        }
        let mut log = self.log.lock();
        if self.store.contains(ip) {
            return Ok(false);
        }
        log.buf.clear();
        format::push_frame(&mut log.buf, LOG_RECORD_LEN, &format::log_record(ip));
        self.write_and_insert(log, || u64::from(self.store.insert(ip)))
            .map(|new| new == 1)
    }

    /// Counts a batch of addresses, writing the new ones to the log first, in as few frames as
    /// fit; returns how many were new. Each new address is written once however often the batch
    /// repeats it.
    pub fn insert_many(&self, ips: &[IpAddr]) -> Result<u64, StorageError> {
        let mut bits = Bits::distinct(ips);
        if bits.is_empty() {
            return Ok(0);
        }
        let mut log = self.log.lock();
        self.store.retain_missing(&mut bits);
        if bits.is_empty() {
            return Ok(0);
        }
        let records: Vec<u8> = bits
            .ipv4
            .iter()
            .map(|&a| IpAddr::V4(Ipv4Addr::from_bits(a)))
            .chain(
                bits.ipv6
                    .iter()
                    .map(|&a| IpAddr::V6(Ipv6Addr::from_bits(a))),
            )
            .flat_map(format::log_record)
            .collect();
        log.buf.clear();
        for payload in records.chunks(MAX_FRAME_RECORDS * LOG_RECORD_LEN) {
            format::push_frame(&mut log.buf, LOG_RECORD_LEN, payload);
        }
        self.write_and_insert(log, || self.store.insert_bits(&mut bits.ipv4, &bits.ipv6))
    }

    /// Writes the frames in the log's buffer, then counts them with `insert`, still under the
    /// lock.
    fn write_and_insert(
        &self,
        mut log: parking_lot::MutexGuard<'_, Log>,
        insert: impl FnOnce() -> u64,
    ) -> Result<u64, StorageError> {
        log.write_buf()?;
        self.written.fetch_add(1, Ordering::Release);
        let new = insert();
        if log.len >= SNAPSHOT_LOG_BYTES && !self.snapshot_due.swap(true, Ordering::Relaxed) {
            self.wake(&self.snapshotter);
        }
        Ok(new)
    }

    /// Whether requests must wait for [`Journal::durable`] before answering.
    pub fn must_wait(&self) -> bool {
        self.settings.durability == Durability::Fsync
    }

    /// Waits until every frame written so far is on stable storage: all a request has counted,
    /// and every address it found already present.
    pub async fn durable(&self) -> Result<(), StorageError> {
        let target = self.written.load(Ordering::Acquire);
        let mut synced = self.synced.subscribe();
        let now = *synced.borrow();
        if now.frames >= target {
            return Ok(());
        }
        if let Some(why) = now.refusing {
            return Err(why.into());
        }
        self.wake(&self.syncer);
        match synced
            .wait_for(|s| s.frames >= target || s.refusing.is_some())
            .await
        {
            Ok(s) if s.frames >= target => Ok(()),
            Ok(s) => Err(s.refusing.unwrap_or(Refusal::Broken).into()),
            Err(_) => Err(StorageError::Broken),
        }
    }

    fn wake(&self, thread: &OnceLock<Thread>) {
        if let Some(thread) = thread.get() {
            thread.unpark();
        }
    }

    /// One turn of the sync thread; returns how long to wait before the next. In fsync mode it
    /// syncs whenever frames are waiting (each sync covers all written before it started), in
    /// buffered mode every `FSYNC_INTERVAL`.
    fn sync_step(&self) -> Duration {
        self.check_place();
        let synced = self.sync_once();
        if synced && self.settings.durability == Durability::Fsync {
            Duration::ZERO
        } else {
            self.settings.fsync_interval
        }
    }

    /// Syncs the log if frames were written since the last sync; returns whether it synced.
    fn sync_once(&self) -> bool {
        // Read together: every frame up to `target` is in this file or in an older one, which
        // was synced before the switch.
        let (file, target) = {
            let log = self.log.lock();
            if log.refusing.is_some() {
                return false;
            }
            (log.file.clone(), self.written.load(Ordering::Acquire))
        };
        if target <= self.synced.borrow().frames {
            return false;
        }
        crash::at(Point::Step("sync the log"));
        match file.sync_data() {
            Ok(()) => {
                self.synced.send_modify(|s| s.frames = s.frames.max(target));
                true
            }
            Err(e) => {
                self.sync_failed(&e);
                false
            }
        }
    }

    /// A failed sync cannot be retried (the kernel may have dropped the pages): the log is
    /// broken until a snapshot has made everything in memory durable again.
    fn sync_failed(&self, e: &io::Error) {
        tracing::error!(error = %e, "syncing the address log failed; refusing new addresses until a snapshot succeeds");
        self.refuse(Refusal::Broken);
    }

    /// Refuses new addresses until a snapshot repairs the log (`Broken`), or the directory is
    /// back (`Lost`).
    fn refuse(&self, why: Refusal) {
        self.log.lock().refusing = Some(why);
        self.synced.send_modify(|s| s.refusing = Some(why));
        self.wake(&self.snapshotter);
    }

    /// Checks that the data directory is still the one the journal started in and that the
    /// log file is still in it: removing or replacing either while the service runs would
    /// otherwise let it acknowledge addresses that the next start cannot find. Runs on every
    /// turn of the sync thread, so within `FSYNC_INTERVAL`, and before every fsync-mode sync.
    fn check_place(&self) {
        let (file, refusing) = {
            let log = self.log.lock();
            (log.file.clone(), log.refusing)
        };
        let dir_here = fs::metadata(&self.dir).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        match refusing {
            Some(Refusal::Lost) if !dir_here => {}
            _ if !dir_here => {
                tracing::error!(dir = %self.dir.display(), "the data directory was removed or replaced; refusing new addresses until it is back");
                self.refuse(Refusal::Lost);
            }
            Some(Refusal::Lost) => {
                // Back where it was: a snapshot makes sure all it lacks is durable again.
                tracing::warn!(dir = %self.dir.display(), "the data directory is back; writing a snapshot before accepting new addresses");
                self.refuse(Refusal::Broken);
            }
            None if file.metadata().is_ok_and(|m| m.nlink() == 0) => {
                tracing::error!(dir = %self.dir.display(), "the address log was removed; refusing new addresses until a snapshot has rewritten them");
                self.refuse(Refusal::Broken);
            }
            _ => {}
        }
    }

    /// One turn of the snapshot thread, which snapshots every `SNAPSHOT_INTERVAL`, when the log
    /// passes [`SNAPSHOT_LOG_BYTES`], and every second while broken until one succeeds; a failed
    /// one is retried after 30 s. Returns how long to wait before the next turn.
    fn snapshot_step(&self, next: &mut Instant) -> Duration {
        let refusing = self.synced.borrow().refusing;
        if refusing == Some(Refusal::Lost) {
            return RETRY;
        }
        let broken = refusing == Some(Refusal::Broken);
        if self.snapshot_due.swap(false, Ordering::Relaxed) || broken || Instant::now() >= *next {
            *next = match self.snapshot() {
                Ok(done) => {
                    tracing::info!(
                        addresses = done.addresses,
                        bytes = done.bytes,
                        took_ms = done.took.as_millis() as u64,
                        "snapshot written"
                    );
                    Instant::now() + self.settings.snapshot_interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot failed; the log is kept and the snapshot retried");
                    let broken = self.synced.borrow().refusing.is_some();
                    let wait = if broken { RETRY } else { RETRY_SNAPSHOT };
                    Instant::now() + wait.min(self.settings.snapshot_interval)
                }
            };
        }
        next.saturating_duration_since(Instant::now())
    }

    /// Writes a snapshot of the whole store and removes the logs it includes: switches to a new
    /// log, dumps the store to a temporary file, syncs it, renames it into place and syncs the
    /// directory. A failure leaves the old snapshot and every log in place.
    pub fn snapshot(&self) -> io::Result<SnapshotDone> {
        let started = Instant::now();
        let (generation, written, was_broken) = {
            let mut log = self.log.lock();
            if log.refusing == Some(Refusal::Lost) {
                return Err(io::Error::other(StorageError::Lost));
            }
            let broken = log.refusing.is_some();
            if !broken && let Err(e) = log.file.sync_data() {
                drop(log);
                self.sync_failed(&e);
                return Err(e);
            }
            // An empty log can stay: the snapshot will cover what comes before it. So failed
            // snapshots retried during an outage do not leave a log file each.
            if log.len > format::LOG_HEADER_LEN as u64 || broken {
                let generation = log.generation + 1;
                let (file, path) = create_log(&self.dir, generation)?;
                log.file = Arc::new(file);
                log.path = path;
                log.generation = generation;
                log.len = format::LOG_HEADER_LEN as u64;
                log.allocated = log.len;
                log.cut_pending = false;
            }
            (log.generation, self.written.load(Ordering::Acquire), broken)
        };
        if !was_broken {
            // The old log was synced above.
            self.synced
                .send_modify(|s| s.frames = s.frames.max(written));
        }
        let (addresses, bytes) = self.write_snapshot(generation)?;
        if was_broken {
            // Everything written before the switch is in the snapshot, and nothing after it:
            // the broken log refused every write.
            self.log.lock().refusing = None;
            self.synced.send_modify(|s| {
                s.frames = s.frames.max(written);
                s.refusing = None;
            });
            tracing::info!("the address log is writable again");
        }
        for (_, path) in logs_in(&self.dir)?
            .into_iter()
            .filter(|&(g, _)| g < generation)
        {
            crash::at(Point::Step("remove a log the snapshot includes"));
            fs::remove_file(path)?;
        }
        self.last_snapshot
            .store(unix_seconds(SystemTime::now()), Ordering::Relaxed);
        Ok(SnapshotDone {
            addresses,
            bytes,
            took: started.elapsed(),
        })
    }

    /// Dumps the store into `snapshot.bin` (through a synced temporary file); returns the
    /// addresses and bytes written.
    fn write_snapshot(&self, generation: u64) -> io::Result<(u64, u64)> {
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let result = (|| {
            crash::at(Point::Step("create snapshot.bin.tmp"));
            let out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            let mut snapshot = SnapshotWriter::new(out, generation)?;
            self.store.for_each_run(|run| match run {
                Run::Ipv4(run) => snapshot.ipv4(run),
                Run::Ipv6(run) => snapshot.ipv6(run),
            })?;
            let (out, header) = snapshot.finish()?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            crash::at(Point::Step("sync snapshot.bin.tmp"));
            file.sync_all()?;
            let bytes = file.metadata()?.len();
            Ok((header.ipv4 + header.ipv6, bytes))
        })();
        match result {
            Ok(done) => {
                crash::at(Point::Step("rename snapshot.bin.tmp to snapshot.bin"));
                fs::rename(&tmp, self.dir.join(SNAPSHOT))?;
                crash::at(Point::Step("sync the directory after the rename"));
                sync_dir(&self.dir)?;
                Ok(done)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// The journal's state for `/metrics`.
    pub fn status(&self) -> Status {
        let last = self.last_snapshot.load(Ordering::Relaxed);
        Status {
            log_bytes: self.log.lock().len,
            refusing: self.synced.borrow().refusing,
            last_snapshot: (last > 0).then_some(last),
        }
    }

    /// Whether new addresses are accepted (see [`Refusal`]).
    pub fn writable(&self) -> bool {
        self.synced.borrow().refusing.is_none()
    }

    /// Stops the threads and syncs the log: for a clean shutdown, after the last request.
    pub fn close(&self) -> io::Result<()> {
        self.stopping.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock());
        for handle in threads {
            handle.thread().unpark();
            let _ = handle.join();
        }
        let log = self.log.lock();
        if let Some(why) = log.refusing {
            return Err(io::Error::other(format!(
                "{}; the addresses refused meanwhile were not acknowledged",
                StorageError::from(why)
            )));
        }
        log.file.sync_data()
    }
}

/// Tells the threads to stop; they hold the journal only while they work (see `run_thread`).
impl Drop for Journal {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        for handle in self.threads.get_mut().iter() {
            handle.thread().unpark();
        }
    }
}

/// A journal thread's body: runs `step` until the journal stops or is dropped, parking for as
/// long as each step asks (woken early by `unpark`). It holds the journal only while a step
/// runs, so a service dropped without [`Journal::close`] leaves no thread behind.
fn run_thread(
    journal: Weak<Journal>,
    mut step: impl FnMut(&Journal) -> Duration + Send + 'static,
) -> impl FnOnce() + Send + 'static {
    move || {
        loop {
            let Some(journal) = journal.upgrade() else {
                return;
            };
            if journal.stopping.load(Ordering::Acquire) {
                return;
            }
            let wait = step(&journal);
            drop(journal);
            if !wait.is_zero() {
                std::thread::park_timeout(wait);
            }
        }
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Creates log file `generation` with its header, synced, and its directory entry synced. A
/// crash before the header is written leaves an empty file, which recovery removes.
fn create_log(dir: &Path, generation: u64) -> io::Result<(File, PathBuf)> {
    let path = log_path(dir, generation);
    crash::at(Point::Step("create a log"));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let header = format::log_header(generation);
    crash::at(Point::Write {
        path: &path,
        offset: 0,
        bytes: &header,
    });
    let created = file
        .write_all_at(&header, 0)
        .and_then(|()| file.sync_all())
        .and_then(|()| sync_dir(dir));
    if let Err(e) = created {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::persist::recover;

    fn settings(dir: &Path, durability: Durability) -> Settings {
        Settings {
            dir: dir.to_path_buf(),
            durability,
            fsync_interval: Duration::from_millis(50),
            snapshot_interval: Duration::from_secs(3600),
        }
    }

    fn ip(i: u32) -> IpAddr {
        if i.is_multiple_of(4) {
            IpAddr::V6(Ipv6Addr::from_bits(0x2001_0db8 << 96 | u128::from(i)))
        } else {
            IpAddr::V4(Ipv4Addr::from_bits(i.wrapping_mul(2_654_435_761)))
        }
    }

    /// Two threads count addresses (one by one, and in batches) while snapshots are taken:
    /// reading the directory back finds every address, and only logs after the last snapshot
    /// are left.
    #[test]
    fn snapshots_taken_during_inserts_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::exact());
        let journal = Journal::start(
            dir.path(),
            settings(dir.path(), Durability::Buffered),
            store.clone(),
            0,
            false,
        )
        .unwrap();
        const N: u32 = 40_000;
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..N / 2 {
                    journal.insert(ip(i)).unwrap();
                }
            });
            s.spawn(|| {
                let all: Vec<IpAddr> = (N / 4..N).map(ip).collect();
                for chunk in all.chunks(1_000) {
                    journal.insert_many(chunk).unwrap();
                }
            });
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(5));
                journal.snapshot().unwrap();
            }
        });
        journal.close().unwrap();
        assert_eq!(store.counts().total(), u64::from(N));

        let read = Store::exact();
        let recovered = recover::read_dir(dir.path(), &read).unwrap();
        let snapshot = recovered.snapshot.expect("a snapshot");
        assert_eq!(recovered.logs.len(), 1, "{:?}", recovered.logs);
        assert_eq!(recovered.logs[0].generation, snapshot.generation);
        assert_eq!(read.counts(), store.counts());
        assert!((0..N).all(|i| read.contains(ip(i))));
    }

    /// A journal dropped without `close` (a service dropped mid-run) is not kept alive by its
    /// own threads.
    #[test]
    fn a_dropped_journal_is_not_kept_alive_by_its_threads() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path(), Durability::Fsync);
        let journal = Journal::start(dir.path(), settings, Arc::new(Store::exact()), 0, false);
        let journal = journal.unwrap();
        journal.insert(ip(1)).unwrap();
        let weak = Arc::downgrade(&journal);
        drop(journal);
        let deadline = Instant::now() + Duration::from_secs(5);
        while weak.upgrade().is_some() {
            assert!(
                Instant::now() < deadline,
                "a thread still holds the journal"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A snapshot while the log is empty keeps that log instead of starting another.
    #[test]
    fn a_snapshot_of_an_empty_log_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::exact());
        let settings = settings(dir.path(), Durability::Buffered);
        let journal = Journal::start(dir.path(), settings, store, 4, false).unwrap();
        for _ in 0..3 {
            journal.snapshot().unwrap();
        }
        journal.insert(ip(1)).unwrap();
        journal.snapshot().unwrap();
        journal.close().unwrap();
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names.contains(&"log-00000000000000000005.bin".to_string()),
            "{names:?}"
        );
    }

    /// After a failed sync (simulated: the disk cannot be made to fail here) new addresses are
    /// refused and waiting requests get an error, repeats still count; the snapshot thread's
    /// repair makes everything durable and writes resume.
    #[tokio::test]
    async fn a_failed_sync_refuses_writes_until_a_snapshot_repairs_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::exact());
        let mut settings = settings(dir.path(), Durability::Fsync);
        settings.fsync_interval = Duration::from_secs(3600);
        let journal = Journal::start(dir.path(), settings, store.clone(), 0, false).unwrap();
        assert!(journal.insert(ip(1)).unwrap());
        journal.durable().await.unwrap();
        // Written, not yet synced, when the sync fails.
        assert!(journal.insert(ip(2)).unwrap());
        journal.sync_failed(&io::Error::other("simulated EIO"));
        assert!(matches!(journal.durable().await, Err(StorageError::Broken)));
        assert!(matches!(journal.insert(ip(3)), Err(StorageError::Broken)));
        assert!(
            !journal.insert(ip(1)).unwrap(),
            "a repeat is still answered"
        );
        assert_eq!(store.counts().total(), 2);

        // The snapshot thread was woken by the failure and repairs within its retry.
        let deadline = Instant::now() + Duration::from_secs(10);
        while journal.synced.borrow().refusing.is_some() {
            assert!(Instant::now() < deadline, "not repaired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        journal.durable().await.unwrap();
        assert!(journal.insert(ip(3)).unwrap());
        journal.durable().await.unwrap();
        journal.close().unwrap();

        let read = Store::exact();
        recover::read_dir(dir.path(), &read).unwrap();
        assert!([1, 2, 3].iter().all(|&i| read.contains(ip(i))));
    }

    /// In fsync mode `durable` returns once a sync covers everything written before the call.
    #[tokio::test]
    async fn fsync_mode_waits_for_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::exact());
        let journal = Journal::start(
            dir.path(),
            settings(dir.path(), Durability::Fsync),
            store,
            0,
            false,
        )
        .unwrap();
        assert!(journal.must_wait());
        journal.durable().await.unwrap();
        for i in 0..100 {
            assert!(journal.insert(ip(i)).unwrap());
            journal.durable().await.unwrap();
            assert!(journal.synced.borrow().frames > u64::from(i));
        }
        assert!(!journal.insert(ip(5)).unwrap());
        journal.close().unwrap();
    }
}
