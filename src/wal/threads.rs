//! The log's two threads: the sync thread (`fdatasync` every `FSYNC_INTERVAL`, or back to back
//! while fsync-mode requests wait; and the check that the data directory is still there) and
//! the snapshot thread (every `SNAPSHOT_INTERVAL`, at [`SNAPSHOT_LOG_BYTES`](super::writer::SNAPSHOT_LOG_BYTES), and every second
//! while the log is broken).

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use super::crash::{self, Point};
use super::error::{Refusal, StorageError};
use super::format::SnapshotWriter;
use super::segment::Segment;
use super::writer::{SnapshotDone, Wal, unix_seconds};
use super::{Durability, Durable, SNAPSHOT, SNAPSHOT_TMP, Settings, logs_in, sync_dir};

/// How soon a failed snapshot is tried again while the log is broken (writes are refused until
/// one succeeds).
const RETRY: Duration = Duration::from_secs(1);

/// How soon a failed periodic snapshot is tried again (the log goes on meanwhile).
const RETRY_SNAPSHOT: Duration = Duration::from_secs(30);

impl<S: Durable> Wal<S> {
    /// Starts segment `generation` in `dir` (recovery has read everything before it into
    /// `state`) and the sync and snapshot threads. `snapshot_now` asks for a snapshot at once,
    /// to fold the segments recovery replayed.
    pub fn start(
        dir: &Path,
        settings: Settings,
        state: Arc<S>,
        generation: u64,
        snapshot_now: bool,
    ) -> io::Result<Arc<Wal<S>>> {
        let segment = Segment::create(dir, generation, state.version())?;
        let wal = Arc::new(Wal::new(dir, settings, state, segment, snapshot_now)?);
        let weak = Arc::downgrade(&wal);
        let sync = run_thread(weak.clone(), |wal| wal.sync_step());
        let mut next_snapshot = Instant::now() + wal.settings.snapshot_interval;
        let snapshot = run_thread(weak, move |wal| wal.snapshot_step(&mut next_snapshot));
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>, thread: &OnceLock<Thread>| {
            let handle = std::thread::Builder::new().name(name.into()).spawn(run)?;
            let _ = thread.set(handle.thread().clone());
            wal.threads.lock().push(handle);
            io::Result::Ok(())
        };
        spawn("ip-counter-sync", Box::new(sync), &wal.syncer)?;
        spawn("ip-counter-snapshot", Box::new(snapshot), &wal.snapshotter)?;
        Ok(wal)
    }

    /// One turn of the sync thread; returns how long to wait before the next. In fsync mode it
    /// syncs whenever writes are waiting (each sync covers all written before it started), in
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

    /// Syncs the segment if it was written since the last sync; returns whether it synced.
    fn sync_once(&self) -> bool {
        // Read together: every write up to `target` is in this file or in an older one, which
        // was synced before the switch.
        let (file, target) = {
            let segment = self.segment.lock();
            if segment.refusing.is_some() {
                return false;
            }
            (segment.file.clone(), self.written.load(Ordering::Acquire))
        };
        if target <= self.synced.borrow().writes {
            return false;
        }
        crash::at(Point::Step("sync the log"));
        match file.sync_data() {
            Ok(()) => {
                self.synced.send_modify(|s| s.writes = s.writes.max(target));
                true
            }
            Err(e) => {
                self.sync_failed(&e);
                false
            }
        }
    }

    /// Checks that the data directory is still the one the log started in and that the
    /// segment file is still in it: removing or replacing either while the service runs would
    /// otherwise let it acknowledge writes that the next start cannot find. Runs on every turn
    /// of the sync thread, so within `FSYNC_INTERVAL`, and before every fsync-mode sync.
    fn check_place(&self) {
        let (file, refusing) = {
            let segment = self.segment.lock();
            (segment.file.clone(), segment.refusing)
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
                tracing::error!(dir = %self.dir.display(), "the log file was removed; refusing new addresses until a snapshot has rewritten them");
                self.refuse(Refusal::Broken);
            }
            _ => {}
        }
    }

    /// One turn of the snapshot thread; returns how long to wait before the next. A failed
    /// snapshot is retried after 30 s, or after 1 s while the log is broken.
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
                        records = done.records,
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

    /// Writes a snapshot of the whole state and removes the segments it includes: switches to
    /// a new segment, writes the state to a temporary file, syncs it, renames it into place and
    /// syncs the directory. A failure leaves the old snapshot and every segment in place.
    pub fn snapshot(&self) -> io::Result<SnapshotDone> {
        let _one_at_a_time = self.snapshotting.lock();
        let started = Instant::now();
        let (generation, written, was_broken) = {
            let mut segment = self.segment.lock();
            if segment.refusing == Some(Refusal::Lost) {
                return Err(io::Error::other(StorageError::Lost));
            }
            let broken = segment.refusing.is_some();
            if !broken && let Err(e) = segment.file.sync_data() {
                drop(segment);
                self.sync_failed(&e);
                return Err(e);
            }
            // An empty segment can stay: the snapshot will cover what comes before it. So
            // failed snapshots retried during an outage do not leave a file each.
            if !segment.is_empty() || broken {
                let next =
                    Segment::create(&self.dir, segment.generation + 1, self.state.version())?;
                segment.switch_to(next);
            }
            (
                segment.generation,
                self.written.load(Ordering::Acquire),
                broken,
            )
        };
        if !was_broken {
            // The old segment was synced above.
            self.synced
                .send_modify(|s| s.writes = s.writes.max(written));
        }
        let (records, bytes) = self.write_snapshot(generation)?;
        if was_broken {
            // Everything written before the switch is in the snapshot, and nothing after it:
            // the broken segment refused every write.
            self.segment.lock().refusing = None;
            self.synced.send_modify(|s| {
                s.writes = s.writes.max(written);
                s.refusing = None;
            });
            tracing::info!("the log is writable again");
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
            records,
            bytes,
            took: started.elapsed(),
        })
    }

    /// Writes the state into `snapshot.bin` (through a synced temporary file); returns the
    /// records and bytes written.
    fn write_snapshot(&self, generation: u64) -> io::Result<(u64, u64)> {
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let result = (|| {
            crash::at(Point::Step("create snapshot.bin.tmp"));
            let out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            let version = self.state.version();
            let sections = S::sections(version).expect("a state reads what it writes");
            let mut snapshot = SnapshotWriter::new(out, generation, version, sections)?;
            self.state.snapshot(&mut snapshot)?;
            let (out, header) = snapshot.finish()?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            crash::at(Point::Step("sync snapshot.bin.tmp"));
            file.sync_all()?;
            let bytes = file.metadata()?.len();
            Ok((header.records.iter().sum(), bytes))
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

    /// Stops the threads and syncs the segment: for a clean shutdown, after the last request.
    pub fn close(&self) -> io::Result<()> {
        self.stopping.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock());
        for handle in threads {
            handle.thread().unpark();
            let _ = handle.join();
        }
        let segment = self.segment.lock();
        if let Some(why) = segment.refusing {
            return Err(io::Error::other(format!(
                "{}; the addresses refused meanwhile were not acknowledged",
                StorageError::from(why)
            )));
        }
        segment.file.sync_data()
    }
}

/// Tells the threads to stop; they hold the log only while they work (see `run_thread`).
impl<S> Drop for Wal<S> {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        for handle in self.threads.get_mut().iter() {
            handle.thread().unpark();
        }
    }
}

/// A thread's body: runs `step` until the log stops or is dropped, parking for as long as each
/// step asks (woken early by `unpark`). It holds the log only while a step runs, so a service
/// dropped without [`Wal::close`] leaves no thread behind.
fn run_thread<S: Durable>(
    wal: Weak<Wal<S>>,
    mut step: impl FnMut(&Wal<S>) -> Duration + Send + 'static,
) -> impl FnOnce() + Send + 'static {
    move || {
        loop {
            let Some(wal) = wal.upgrade() else {
                return;
            };
            if wal.stopping.load(Ordering::Acquire) {
                return;
            }
            let wait = step(&wal);
            drop(wal);
            if !wait.is_zero() {
                std::thread::park_timeout(wait);
            }
        }
    }
}
