//! Log files on disk or standard input, read as chunks of whole lines for `count` and `send`.
//!
//! This module owns opening an input (a path, or stdin for `-`), recognising gzip by its magic
//! bytes (so `.gz`, logrotate's concatenated members and compressed stdin all work), the
//! progress bar, and reading on a second thread: one thread reads and decompresses into
//! large buffers while the caller parses the previous one, and buffers are recycled, so there is
//! no allocation per line or per chunk.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use flate2::bufread::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Bytes read per chunk: large enough that reading and handing over cost nothing per line.
const CHUNK_BYTES: usize = 4 << 20;

/// Chunks in flight between the reading thread and the caller.
const CHUNKS_IN_FLIGHT: usize = 2;

/// One input: a file, or standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Standard input (no file arguments, or `-`).
    Stdin,
    /// A file; gzip is recognised from its contents.
    File(PathBuf),
}

impl Input {
    /// The inputs named on a command line: standard input when there are none.
    pub fn from_args(files: &[PathBuf]) -> Vec<Input> {
        if files.is_empty() {
            return vec![Input::Stdin];
        }
        files
            .iter()
            .map(|f| match f.to_str() {
                Some("-") => Input::Stdin,
                _ => Input::File(f.clone()),
            })
            .collect()
    }

    /// How messages name this input.
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".to_owned(),
            Input::File(path) => path.display().to_string(),
        }
    }

    /// Opens the input, counting the bytes read (before decompression) on `progress`, and
    /// decompressing it when it starts with the gzip magic bytes.
    pub fn open(&self, progress: &ProgressBar) -> io::Result<Box<dyn Read + Send>> {
        let raw: Box<dyn Read + Send> = match self {
            Input::Stdin => Box::new(io::stdin()),
            Input::File(path) => Box::new(File::open(path)?),
        };
        let mut reader = BufReader::with_capacity(1 << 20, progress.wrap_read(raw));
        if reader.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
            Ok(Box::new(MultiGzDecoder::new(reader)))
        } else {
            Ok(Box::new(reader))
        }
    }

    /// Size on disk, when known.
    fn size(&self) -> Option<u64> {
        match self {
            Input::Stdin => None,
            Input::File(path) => Path::new(path).metadata().ok().map(|m| m.len()),
        }
    }
}

/// A progress bar over the bytes of `inputs`, drawn on stderr only when stderr is a terminal.
pub fn progress_bar(inputs: &[Input]) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total: Option<u64> = inputs.iter().map(Input::size).sum();
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = match total {
        Some(_) => "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        None => "{spinner} {binary_bytes} {binary_bytes_per_sec}",
    };
    bar.with_style(ProgressStyle::with_template(template).expect("a valid template"))
}

/// Reads `reader` to the end on a separate thread and calls `f` with successive chunks of whole
/// lines, in order. Every chunk but the last ends with `\n`; a line longer than a chunk comes
/// whole in a larger one. Stops at the first error of either side.
pub fn for_each_chunk<E: From<io::Error>>(
    reader: Box<dyn Read + Send>,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    let reading = thread::spawn(move || read_chunks(reader, &full_tx, &empty_rx));
    let mut result = Ok(());
    for chunk in &full_rx {
        let outcome = chunk.map_err(E::from).and_then(|chunk| {
            let done = f(&chunk);
            // The reader may have finished; then the buffer is simply dropped.
            let _ = empty_tx.send(chunk);
            done
        });
        if let Err(e) = outcome {
            result = Err(e);
            break;
        }
    }
    // Dropping the receiver stops the reader at its next send.
    drop(full_rx);
    reading.join().expect("the reading thread does not panic");
    result
}

/// The reading thread: fills buffers with whole lines and sends them until EOF or an error.
fn read_chunks(
    mut reader: Box<dyn Read + Send>,
    full: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    empty: &mpsc::Receiver<Vec<u8>>,
) {
    // Bytes after the last newline of the previous chunk: the start of its next line.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = empty.try_recv().unwrap_or_default();
        buf.clear();
        buf.append(&mut carry);
        let eof = match fill(&mut *reader, &mut buf) {
            Ok(eof) => eof,
            Err(e) => {
                let _ = full.send(Err(e));
                return;
            }
        };
        if !eof {
            match memchr::memrchr(b'\n', &buf) {
                Some(last) => carry.extend_from_slice(&buf[last + 1..]),
                // One line longer than the buffer: read on until it ends.
                None => {
                    carry = buf;
                    continue;
                }
            }
            let len = buf.len() - carry.len();
            buf.truncate(len);
        }
        if !buf.is_empty() && full.send(Ok(buf)).is_err() {
            return;
        }
        if eof {
            return;
        }
    }
}

/// Appends up to [`CHUNK_BYTES`] bytes to `buf`; returns whether the input ended first.
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let want = CHUNK_BYTES as u64;
    let n = reader.take(want).read_to_end(buf)?;
    Ok((n as u64) < want)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn chunks_of(data: Vec<u8>) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        for_each_chunk::<io::Error>(Box::new(io::Cursor::new(data)), |c| {
            chunks.push(c.to_vec());
            Ok(())
        })
        .unwrap();
        chunks
    }

    #[test]
    fn chunks_are_whole_lines_and_add_up_to_the_input() {
        let line = b"192.0.2.1 - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/1.1\" 200 1\n";
        let mut data = line.repeat(3 * CHUNK_BYTES / line.len());
        data.extend_from_slice(b"10.0.0.1 no newline at the end");
        let chunks = chunks_of(data.clone());
        assert!(chunks.len() >= 3, "{}", chunks.len());
        for chunk in &chunks[..chunks.len() - 1] {
            assert_eq!(chunk.last(), Some(&b'\n'));
            assert_eq!(chunk.len() % line.len(), 0);
        }
        assert_eq!(chunks.concat(), data);
    }

    #[test]
    fn a_line_longer_than_a_chunk_comes_whole() {
        let mut data = vec![b'x'; CHUNK_BYTES * 2 + 7];
        data.push(b'\n');
        let long_line = data.clone();
        data.extend(b"short\n".repeat(CHUNK_BYTES / 3));
        let chunks = chunks_of(data.clone());
        assert_eq!(chunks.concat(), data);
        assert!(chunks.len() > 1);
        assert!(chunks[0].starts_with(&long_line), "the long line is split");
        assert!(chunks.iter().all(|c| c.ends_with(b"\n")));
        assert!(chunks_of(Vec::new()).is_empty());
    }

    #[test]
    fn an_error_from_the_caller_stops_the_reading() {
        let data = vec![b'\n'; CHUNK_BYTES * 8];
        let mut calls = 0;
        let result = for_each_chunk(Box::new(io::Cursor::new(data)), |_| {
            calls += 1;
            Err(io::Error::other("stop"))
        });
        assert_eq!(result.unwrap_err().to_string(), "stop");
        assert_eq!(calls, 1);
    }

    #[test]
    fn gzip_files_are_recognised_by_their_contents() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("access.log");
        std::fs::write(&plain, b"1.2.3.4 x\n").unwrap();
        let packed = dir.path().join("access.log.1"); // no .gz: the magic bytes decide
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(b"1.2.3.4 x\n").unwrap();
        let mut two_members = encoder.finish().unwrap();
        two_members.extend(two_members.clone());
        std::fs::write(&packed, two_members).unwrap();

        let read = |path: &Path| {
            let mut text = String::new();
            Input::File(path.to_path_buf())
                .open(&ProgressBar::hidden())
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        };
        assert_eq!(read(&plain), "1.2.3.4 x\n");
        assert_eq!(read(&packed), "1.2.3.4 x\n1.2.3.4 x\n");
        let missing = Input::File(dir.path().join("missing")).open(&ProgressBar::hidden());
        assert!(missing.is_err());
    }

    #[test]
    fn no_arguments_or_a_dash_mean_standard_input() {
        assert_eq!(Input::from_args(&[]), [Input::Stdin]);
        let args = [PathBuf::from("-"), PathBuf::from("a.log")];
        assert_eq!(
            Input::from_args(&args),
            [Input::Stdin, Input::File("a.log".into())]
        );
    }
}
