//! [`Segment`]: the log file being appended to, and creating one.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::crash::{self, Point};
use super::error::{Refusal, StorageError};
use super::format::Version;
use super::{format, log_path, sync_dir};

/// Zeros written ahead of the segment's end at a time (see [`Segment::allocated`]).
const ALLOCATE_AHEAD: usize = 64 << 10;

/// The segment file being appended to.
pub(super) struct Segment {
    pub(super) file: Arc<File>,
    pub(super) path: PathBuf,
    pub(super) generation: u64,
    /// End of the last whole frame: where the next write goes.
    pub(super) len: u64,
    /// The file's size: past `len` it holds zeros written ahead, so that appending does not
    /// change the size and `fdatasync` need not commit the file system's journal each time
    /// (docs/DESIGN.md). Recovery drops the zeros.
    allocated: u64,
    /// A failed write may have left part of a frame past `len`, and cutting it failed too.
    cut_pending: bool,
    /// Why new records are refused, if they are; see [`Refusal`].
    pub(super) refusing: Option<Refusal>,
    /// Frames being encoded.
    pub(super) buf: Vec<u8>,
}

impl Segment {
    /// Creates segment `generation` in `dir` with its header, synced, and its directory entry
    /// synced. A crash before the header is written leaves an empty file, which recovery
    /// removes.
    pub(super) fn create(dir: &Path, generation: u64, version: Version) -> io::Result<Segment> {
        let path = log_path(dir, generation);
        crash::at(Point::Step("create a log"));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let header = format::log_header(generation, version);
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
        Ok(Segment {
            file: Arc::new(file),
            path,
            generation,
            len: format::LOG_HEADER_LEN as u64,
            allocated: format::LOG_HEADER_LEN as u64,
            cut_pending: false,
            refusing: None,
            buf: Vec::new(),
        })
    }

    /// Goes on in `next`, keeping the refusal and the buffer.
    pub(super) fn switch_to(&mut self, next: Segment) {
        let refusing = self.refusing;
        let buf = std::mem::take(&mut self.buf);
        *self = Segment {
            refusing,
            buf,
            ..next
        };
    }

    /// Whether it holds no frame.
    pub(super) fn is_empty(&self) -> bool {
        self.len == format::LOG_HEADER_LEN as u64
    }

    /// Appends the frames in `buf` at `len`, first writing zeros ahead when it would pass
    /// `allocated`; on failure cuts the file back to `len`.
    pub(super) fn write_buf(&mut self) -> Result<(), StorageError> {
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
