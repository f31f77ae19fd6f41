//! Crash points: the instants of the write path at which a process can be killed, named so that
//! tests can stop there and read the data directory as a kill would leave it.
//!
//! The log and recovery call [`at`] before each step that changes a file. In the service it
//! does nothing (an empty inline function); in unit tests a hook installed on the calling thread
//! (`on_crash_points`) copies the directory at that instant, and for a write every
//! state the write can be cut short in, and checks that it reads back.

use std::path::Path;

/// A step about to change the data directory.
#[derive(Debug, Clone, Copy)]
pub enum Point<'a> {
    /// `bytes` are about to be written at `offset` of the file `path`.
    Write {
        /// The file.
        path: &'a Path,
        /// Where the bytes go.
        offset: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A named step (a file created, renamed, removed or cut, a sync) is about to happen.
    Step(&'static str),
}

/// Called before each step; see the module docs.
#[cfg(not(test))]
#[inline(always)]
pub fn at(_point: Point<'_>) {}

#[cfg(test)]
pub use hook::{at, on_crash_points};

#[cfg(test)]
mod hook {

    use std::cell::RefCell;

    use super::Point;

    type Hook = Box<dyn FnMut(Point<'_>)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Calls the thread's hook, if any, with the hook taken out so that what it runs (a
    /// recovery of a copy) does not call it again.
    pub fn at(point: Point<'_>) {
        let Some(mut hook) = HOOK.with(|h| h.borrow_mut().take()) else {
            return;
        };
        hook(point);
        HOOK.with(|h| *h.borrow_mut() = Some(hook));
    }

    /// Runs `f` with `hook` called at every crash point this thread reaches.
    pub fn on_crash_points<T>(hook: impl FnMut(Point<'_>) + 'static, f: impl FnOnce() -> T) -> T {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
        let result = f();
        HOOK.with(|h| *h.borrow_mut() = None);
        result
    }
}

#[cfg(test)]
mod tests {
    //! A kill at every crash point of the write path, and of recovery itself, leaves a
    //! directory that the next start reads, with every acknowledged record (the toy state's,
    //! 16 bytes each as the exact counter's are).

    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::fs;
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Point, on_crash_points};
    use crate::wal::testing::Toy;
    use crate::wal::{Durability, Settings, Wal, recover};

    /// Where a kill can cut a write of `len` bytes at `offset` short: before it, after it, and
    /// at every sector boundary inside it (a write stops between pages, a power loss between
    /// sectors).
    fn cuts(offset: u64, len: usize) -> Vec<usize> {
        let mut cuts = vec![0, len];
        cuts.extend((1..len).filter(|k| (offset + *k as u64).is_multiple_of(512)));
        cuts
    }

    /// What the test has counted so far.
    #[derive(Default)]
    struct Sent {
        /// Records whose insert returned: acknowledged.
        acked: HashSet<u128>,
        /// Records whose insert was called.
        attempted: HashSet<u128>,
        /// Crash states checked.
        states: u64,
    }

    fn settings(dir: &Path) -> Settings {
        Settings {
            dir: dir.to_path_buf(),
            durability: Durability::Buffered,
            fsync_interval: Duration::from_secs(3600),
            snapshot_interval: Duration::from_secs(3600),
        }
    }

    /// The files of `dir` (not its folders) copied into a new directory, as a kill at this
    /// instant leaves them.
    fn copy_dir(dir: &Path) -> tempfile::TempDir {
        let copy = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
            }
        }
        copy
    }

    /// Starts on `dir` as the service does (read back, repair, a new log, the start-up
    /// snapshot) and checks the count: every acknowledged address, nothing never sent. With
    /// `nested`, a kill at each crash point of that start is checked the same way first.
    fn check_start(dir: &Path, sent: &Rc<RefCell<Sent>>, at: &str, nested: bool) {
        sent.borrow_mut().states += 1;
        if nested {
            let inner = copy_dir(dir);
            let (sent_inner, path) = (sent.clone(), inner.path().to_path_buf());
            let label = at.to_string();
            on_crash_points(
                move |point| {
                    if let Point::Step(step) = point {
                        let copy = copy_dir(&path);
                        let label = format!("{label}, then at \"{step}\" of the next start");
                        check_start(copy.path(), &sent_inner, &label, false);
                    }
                },
                || start(inner.path(), at),
            );
        }
        let read = start(dir, at).all();
        let sent = sent.borrow();
        let missing = sent.acked.iter().filter(|r| !read.contains(r)).count();
        assert_eq!(
            missing, 0,
            "a kill {at}: {missing} acknowledged records lost"
        );
        assert!(
            read.iter().all(|r| sent.attempted.contains(r)),
            "a kill {at}: a record never sent was read back"
        );
    }

    /// Recovery, repair, a log on the next generation and its start-up snapshot, as
    /// `DataDir::recover` runs them.
    fn start(dir: &Path, at: &str) -> Arc<Toy> {
        let toy = Arc::new(Toy::default());
        let recovered = recover::read_dir(dir, &*toy)
            .unwrap_or_else(|e| panic!("the start after a kill {at} is refused: {e}"));
        recovered.repair(dir).unwrap();
        let wal = Wal::start(
            dir,
            settings(dir),
            toy.clone(),
            recovered.next_generation,
            false,
        )
        .unwrap();
        wal.snapshot().unwrap();
        wal.close().unwrap();
        toy
    }

    /// Record `i`: every fifth one large (snapshot section 1), the others small (section 0).
    fn rec(i: u32) -> u128 {
        if i.is_multiple_of(5) {
            0x2001_0db8 << 96 | u128::from(i)
        } else {
            u128::from(i.wrapping_mul(2_654_435_761))
        }
    }

    /// Singles, batches that fit the zeros written ahead and batches larger than them, log
    /// switches and snapshots: at every crash point, and at every place each write can be cut,
    /// the directory as a kill leaves it starts, with every acknowledged address.
    #[test]
    fn a_kill_at_any_instant_leaves_a_directory_that_starts_with_every_acknowledged_record() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().to_path_buf();
        let sent = Rc::new(RefCell::new(Sent::default()));
        let hook = {
            let (sent, dir) = (sent.clone(), dir.clone());
            move |point: Point<'_>| match point {
                Point::Step(step) => {
                    let copy = copy_dir(&dir);
                    check_start(copy.path(), &sent, &format!("at \"{step}\""), true);
                }
                Point::Write {
                    path,
                    offset,
                    bytes,
                } => {
                    let name = path.file_name().unwrap();
                    for cut in cuts(offset, bytes.len()) {
                        let copy = copy_dir(&dir);
                        let file = fs::OpenOptions::new()
                            .write(true)
                            .open(copy.path().join(name))
                            .unwrap();
                        file.write_all_at(&bytes[..cut], offset).unwrap();
                        let at = format!(
                            "after {cut} of {} bytes written at offset {offset} of {}",
                            bytes.len(),
                            name.display()
                        );
                        check_start(copy.path(), &sent, &at, false);
                    }
                }
            }
        };
        on_crash_points(hook, || {
            let toy = Arc::new(Toy::default());
            let wal = Wal::start(&dir, settings(&dir), toy.clone(), 0, false).unwrap();
            let insert = |records: Vec<u128>| {
                sent.borrow_mut().attempted.extend(&records);
                toy.insert(&wal, &records).unwrap();
                sent.borrow_mut().acked.extend(records);
            };
            for i in 0..3 {
                insert(vec![rec(i)]);
            }
            // Inside the zeros written ahead, then larger than them.
            insert((100..3_100).map(rec).collect());
            wal.snapshot().unwrap();
            insert((10_000..15_000).map(rec).chain([rec(1)]).collect());
            for i in 20_000..20_003 {
                insert(vec![rec(i)]);
            }
            wal.snapshot().unwrap();
            insert(vec![rec(30_000)]);
            wal.close().unwrap();
        });
        let states = sent.borrow().states;
        assert!(states > 300, "only {states} crash states checked");
    }
}
