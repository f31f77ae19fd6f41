//! `ip-counter send --follow FILE...` and `ip-counter send -`: lines sent while they are
//! being written.
//!
//! This module owns tailing files the way `tail -F` does ([`Tail`]: rotation by rename or by
//! truncation, a file that appears later), the state file of acknowledged offsets
//! ([`State`]), and the streaming loop that cuts lines into batches and posts one when it is
//! full or its first line is [`FLUSH_AFTER`] old. Batches are posted one at a time, in order,
//! so that an offset is saved only once every line before it was acknowledged; a service that
//! cannot be reached is retried until it can, or until SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::post::{Job, SendError, Sender, Sent};
use crate::batch::{self, LineFormat};
use crate::cli::logfile::Input;

/// A batch is sent once its first line is this old, full or not.
pub const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// How often followed files are checked for new lines, rotation and truncation.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Bytes read from a file or standard input at a time.
const READ_BYTES: usize = 1 << 20;

/// Which file a position is in: its device and inode, as `tail -F` tells files apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A followed file's acknowledged position: every line before `offset` of the file `id` has
/// been accepted or rejected by the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(flatten)]
    id: FileId,
    offset: u64,
}

/// The state file: each followed path's acknowledged position. Written whole to a temporary
/// file and renamed over the old one, so that a kill at any instant leaves one or the other.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    files: BTreeMap<PathBuf, Position>,
}

impl State {
    /// Reads `path`; an empty state when it does not exist yet.
    pub fn load(path: &Path) -> Result<State, SendError> {
        let error = |source| SendError::Input {
            input: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| error(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(error(e)),
        }
    }

    fn save(&self, path: &Path) -> Result<(), SendError> {
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec(self).expect("a state serializes");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| SendError::Input {
                input: path.display().to_string(),
                source,
            })
    }
}

/// Lines read so far and not yet handed on: the start of an incomplete last line.
#[derive(Debug, Default)]
struct Lines {
    /// Offset of the first byte of `carry` in its file.
    start: u64,
    carry: Vec<u8>,
}

impl Lines {
    /// Adds `data`; returns the whole lines now complete and the offset of their first byte.
    fn push(&mut self, data: &[u8]) -> Option<(Vec<u8>, u64)> {
        self.carry.extend_from_slice(data);
        let end = memchr::memrchr(b'\n', &self.carry)? + 1;
        let rest = self.carry.split_off(end);
        let lines = std::mem::replace(&mut self.carry, rest);
        let start = self.start;
        self.start += end as u64;
        Some((lines, start))
    }

    /// The incomplete last line, ended with a newline: for a file that will not grow again.
    fn finish(&mut self) -> Option<(Vec<u8>, u64)> {
        if self.carry.is_empty() {
            return None;
        }
        let mut line = std::mem::take(&mut self.carry);
        line.push(b'\n');
        let start = self.start;
        self.start += line.len() as u64 - 1;
        Some((line, start))
    }
}

/// What the readers hand the sending loop.
enum Event {
    /// Whole lines of input `input`, starting at `at` in a followed file.
    Lines {
        input: usize,
        lines: Vec<u8>,
        at: Option<Position>,
    },
    /// Standard input ended.
    Ended,
    Failed(SendError),
}

/// One followed path: the file open under it now (or last), and where reading stands.
struct Tail {
    path: PathBuf,
    open: Option<(File, FileId)>,
    lines: Lines,
}

impl Tail {
    /// A tail of `path` resuming at `resume`, its position from the state file: in the file
    /// now at `path` when it is the same file, else (rotated while `send` was stopped) in the
    /// file of that id beside it, read to its end before `path` is opened from its start.
    fn new(path: PathBuf, resume: Option<Position>) -> Tail {
        let mut tail = Tail {
            path,
            open: None,
            lines: Lines::default(),
        };
        if let Some(resume) = resume
            && let Some(file) = tail.find(resume.id)
            && file.metadata().is_ok_and(|m| m.len() >= resume.offset)
        {
            tail.start(file, resume.id, resume.offset);
        }
        tail
    }

    /// The file with `id` at the path or, rotated, beside it in the same directory.
    fn find(&self, id: FileId) -> Option<File> {
        let at_path = std::fs::metadata(&self.path).ok();
        if at_path.is_some_and(|m| FileId::of(&m) == id) {
            return File::open(&self.path).ok();
        }
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::read_dir(dir.unwrap_or(Path::new(".")))
            .ok()?
            .flatten()
            .find(|entry| entry.metadata().is_ok_and(|m| FileId::of(&m) == id))
            .and_then(|entry| File::open(entry.path()).ok())
    }

    fn start(&mut self, mut file: File, id: FileId, offset: u64) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            self.open = Some((file, id));
            self.lines = Lines {
                start: offset,
                carry: Vec::new(),
            };
        }
    }

    /// Reads what was added since the last poll and follows a rotation or truncation; `emit`
    /// gets whole lines and where they start.
    fn poll(&mut self, buf: &mut [u8], mut emit: impl FnMut(Vec<u8>, Position)) -> io::Result<()> {
        if self.open.is_none() {
            match File::open(&self.path) {
                Ok(file) => {
                    let id = FileId::of(&file.metadata()?);
                    self.start(file, id, 0);
                }
                // Not there yet: looked for again at the next poll.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.read_to_end(buf, &mut emit)?;
        let Some((_, id)) = &self.open else {
            return Ok(());
        };
        let id = *id;
        match std::fs::metadata(&self.path) {
            // Renamed away and no new file yet: the writer may still append to the old one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
            Ok(meta) if FileId::of(&meta) != id => {
                // Rotated by rename: the old file is finished (read again, in case the writer
                // added to it since), the new one is read from its start.
                self.read_to_end(buf, &mut emit)?;
                if let Some((line, start)) = self.lines.finish() {
                    emit(line, Position { id, offset: start });
                }
                self.open = None;
                return self.poll(buf, emit);
            }
            Ok(meta) if meta.len() < self.lines.start + self.lines.carry.len() as u64 => {
                // Truncated in place (copytruncate): from the start again.
                let (file, _) = self.open.take().expect("open");
                self.start(file, id, 0);
                self.read_to_end(buf, &mut emit)?;
            }
            Ok(_) => {}
        }
        Ok(())
    }

    fn read_to_end(
        &mut self,
        buf: &mut [u8],
        emit: &mut impl FnMut(Vec<u8>, Position),
    ) -> io::Result<()> {
        let Some((file, id)) = &mut self.open else {
            return Ok(());
        };
        loop {
            let n = file.read(buf)?;
            if n == 0 {
                return Ok(());
            }
            if let Some((lines, start)) = self.lines.push(&buf[..n]) {
                emit(
                    lines,
                    Position {
                        id: *id,
                        offset: start,
                    },
                );
            }
        }
    }
}

/// Reads the followed files until `stop`, handing lines to `events`.
fn follow_files(mut tails: Vec<Tail>, events: &mpsc::SyncSender<Event>, stop: &AtomicBool) {
    let mut buf = vec![0; READ_BYTES];
    while !stop.load(Ordering::Relaxed) {
        for (input, tail) in tails.iter_mut().enumerate() {
            let polled = tail.poll(&mut buf, |lines, at| {
                let _ = events.send(Event::Lines {
                    input,
                    lines,
                    at: Some(at),
                });
            });
            if let Err(source) = polled {
                let input = tail.path.display().to_string();
                let _ = events.send(Event::Failed(SendError::Input { input, source }));
                return;
            }
        }
        thread::sleep(POLL_EVERY);
    }
}

/// Reads standard input (gzip or not) to its end, handing lines on as they arrive.
fn read_stdin(events: &mpsc::SyncSender<Event>) {
    let failed = |source| {
        Event::Failed(SendError::Input {
            input: Input::Stdin.name(),
            source,
        })
    };
    let mut reader = match Input::Stdin.open(&ProgressBar::hidden()) {
        Ok(reader) => reader,
        Err(e) => {
            let _ = events.send(failed(e));
            return;
        }
    };
    let mut lines = Lines::default();
    let mut buf = vec![0; READ_BYTES];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = events.send(failed(e));
                return;
            }
        };
        if let Some((lines, _)) = lines.push(&buf[..n]) {
            let event = Event::Lines {
                input: 0,
                lines,
                at: None,
            };
            if events.send(event).is_err() {
                return;
            }
        }
    }
    if let Some((lines, _)) = lines.finish() {
        let _ = events.send(Event::Lines {
            input: 0,
            lines,
            at: None,
        });
    }
    let _ = events.send(Event::Ended);
}

/// Lines of one input waiting to be sent.
struct Pending {
    name: String,
    /// The followed path, whose position the state file keeps; `None` for standard input.
    path: Option<PathBuf>,
    format: Option<LineFormat>,
    body: Vec<u8>,
    lines: u64,
    /// The input's line number of the first line of `body`.
    first_line: u64,
    /// When the first line of `body` arrived.
    since: Option<Instant>,
    /// Where the input stands once `body` is acknowledged.
    end: Option<Position>,
}

/// What to stream: the followed files (with the state file) or standard input.
pub enum Source {
    /// Files followed as they grow.
    Files {
        /// The paths, each followed through rotations.
        paths: Vec<PathBuf>,
        /// The state file of their acknowledged positions.
        state: PathBuf,
    },
    /// Standard input, to its end.
    Stdin,
}

/// Streams `source` to the service until standard input ends or `stop` turns true; returns
/// what was sent. Rejected lines go to `note`.
pub fn stream(
    source: Source,
    sender: &Sender,
    stop: Arc<AtomicBool>,
    note: impl Fn(&str),
) -> Result<Sent, SendError> {
    let (events_tx, events) = mpsc::sync_channel::<Event>(16);
    let (paths, mut state, state_path) = match source {
        Source::Files { paths, state } => {
            let saved = State::load(&state)?;
            let tails: Vec<Tail> = paths
                .iter()
                .map(|p| Tail::new(p.clone(), saved.files.get(p).copied()))
                .collect();
            let stop = stop.clone();
            thread::spawn(move || follow_files(tails, &events_tx, &stop));
            (paths.into_iter().map(Some).collect(), saved, Some(state))
        }
        Source::Stdin => {
            // Left blocked in a read if the run stops first; the process exits without it.
            thread::spawn(move || read_stdin(&events_tx));
            (vec![None], State::default(), None)
        }
    };
    let mut pending: Vec<Pending> = paths
        .into_iter()
        .map(|path: Option<PathBuf>| Pending {
            name: path
                .as_ref()
                .map_or_else(|| Input::Stdin.name(), |p| p.display().to_string()),
            path,
            format: sender.format,
            body: Vec::new(),
            lines: 0,
            first_line: 1,
            since: None,
            end: None,
        })
        .collect();
    let mut sent = Sent::default();
    let mut flush = |p: &mut Pending, sent: &mut Sent| -> Result<(), SendError> {
        if p.body.is_empty() {
            return Ok(());
        }
        let job = Job {
            body: std::mem::take(&mut p.body),
            format: p.format.unwrap_or(LineFormat::Text),
            input: p.name.clone(),
            first_line: p.first_line,
        };
        let delivered = sender.post_until_delivered(&job, &stop, sent, &note)?;
        p.first_line += p.lines;
        p.lines = 0;
        p.since = None;
        // Undelivered (stopping while the service is away): the saved position stays before
        // these lines, so the next run sends them.
        if delivered
            && let (Some(end), Some(path), Some(state_path)) = (p.end, &p.path, &state_path)
        {
            state.files.insert(path.clone(), end);
            state.save(state_path)?;
        }
        Ok(())
    };
    loop {
        let wait = pending
            .iter()
            .filter_map(|p| p.since)
            .min()
            .map_or(POLL_EVERY, |since| {
                (since + FLUSH_AFTER).saturating_duration_since(Instant::now())
            })
            .min(POLL_EVERY);
        let event = events.recv_timeout(wait);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match event {
            Ok(Event::Lines { input, lines, at }) => {
                let p = &mut pending[input];
                let mut rest = &lines[..];
                let mut offset = at.map(|a| a.offset);
                while !rest.is_empty() {
                    if p.format.is_none() {
                        p.format = batch::lines(rest)
                            .map(|(_, line)| line)
                            .find(|line| !batch::is_blank(line))
                            .map(LineFormat::detect);
                    }
                    let wanted = (sender.batch_lines - p.lines) as usize;
                    let take = memchr::memchr_iter(b'\n', rest)
                        .nth(wanted - 1)
                        .map_or(rest.len(), |end| end + 1);
                    let taken = &rest[..take];
                    p.body.extend_from_slice(taken);
                    p.lines += memchr::memchr_iter(b'\n', taken).count() as u64;
                    p.since.get_or_insert_with(Instant::now);
                    if let (Some(at), Some(o)) = (at, offset.as_mut()) {
                        *o += take as u64;
                        p.end = Some(Position {
                            id: at.id,
                            offset: *o,
                        });
                    }
                    rest = &rest[take..];
                    if p.lines == sender.batch_lines {
                        flush(p, &mut sent)?;
                    }
                }
            }
            Ok(Event::Ended) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Event::Failed(e)) => {
                for p in &mut pending {
                    flush(p, &mut sent)?;
                }
                return Err(e);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        for p in &mut pending {
            if p.since.is_some_and(|since| since.elapsed() >= FLUSH_AFTER) {
                flush(p, &mut sent)?;
            }
        }
    }
    // Stopping: what has been read is sent, unless the service cannot be reached now.
    for p in &mut pending {
        flush(p, &mut sent)?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn lines_are_handed_on_whole_with_their_offset() {
        let mut lines = Lines::default();
        assert_eq!(lines.push(b"ab"), None);
        assert_eq!(lines.push(b"c\nde\nf"), Some((b"abc\nde\n".to_vec(), 0)));
        assert_eq!(lines.push(b"g\n"), Some((b"fg\n".to_vec(), 7)));
        assert_eq!(lines.finish(), None);
        assert_eq!(lines.push(b"tail"), None);
        assert_eq!(lines.finish(), Some((b"tail\n".to_vec(), 10)));
    }

    fn polled(tail: &mut Tail) -> Vec<(String, u64)> {
        let mut buf = vec![0; 64];
        let mut got = Vec::new();
        tail.poll(&mut buf, |lines, at| {
            got.push((String::from_utf8(lines).unwrap(), at.offset));
        })
        .unwrap();
        got
    }

    fn append(path: &Path, text: &str) {
        let mut f = File::options()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_tail_follows_late_creation_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut tail = Tail::new(path.clone(), None);
        assert!(polled(&mut tail).is_empty(), "no file yet");

        append(&path, "one\ntwo\nthr");
        assert_eq!(polled(&mut tail), [("one\ntwo\n".into(), 0)]);
        append(&path, "ee\n");
        assert_eq!(polled(&mut tail), [("three\n".into(), 8)]);

        // Rotation by rename: the writer adds to the old file, then a new one appears.
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        append(&dir.path().join("access.log.1"), "four\nfiv");
        assert_eq!(polled(&mut tail), [("four\n".into(), 14)]);
        append(&path, "six\n");
        assert_eq!(
            polled(&mut tail),
            [("fiv\n".into(), 19), ("six\n".into(), 0)],
            "the old file's last partial line, then the new file from its start"
        );

        // Truncation in place: from the start again.
        std::fs::write(&path, "").unwrap();
        append(&path, "7\n");
        assert_eq!(polled(&mut tail), [("7\n".into(), 0)]);
    }

    #[test]
    fn a_tail_resumes_at_its_saved_position_even_in_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        append(&path, "old1\nold2\nold3\n");
        let id = FileId::of(&std::fs::metadata(&path).unwrap());
        let saved = Position { id, offset: 5 };

        let mut tail = Tail::new(path.clone(), Some(saved));
        assert_eq!(polled(&mut tail), [("old2\nold3\n".into(), 5)]);

        // Rotated while stopped: the rest of the old file first, then the new one.
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        append(&path, "new1\n");
        let mut tail = Tail::new(path.clone(), Some(saved));
        assert_eq!(
            polled(&mut tail),
            [("old2\nold3\n".into(), 5), ("new1\n".into(), 0)]
        );

        // An unknown file (the old one deleted): the one at the path from its start.
        std::fs::remove_file(dir.path().join("access.log.1")).unwrap();
        let mut tail = Tail::new(path, Some(saved));
        assert_eq!(polled(&mut tail), [("new1\n".into(), 0)]);
    }

    #[test]
    fn the_state_file_is_read_back_and_may_be_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(State::load(&path).unwrap().files.is_empty());
        let mut state = State::default();
        let at = Position {
            id: FileId { dev: 1, ino: 2 },
            offset: 3,
        };
        state.files.insert(PathBuf::from("/var/log/a.log"), at);
        state.save(&path).unwrap();
        assert_eq!(
            State::load(&path).unwrap().files[Path::new("/var/log/a.log")],
            at
        );
        std::fs::write(&path, "not json").unwrap();
        assert!(State::load(&path).is_err());
    }
}
