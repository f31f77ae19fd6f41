//! [`DataDir`]: the one process's hold on a data directory (its lock), and starting the log on it.

use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{Durable, LOCK, RecoveryError, Settings, Wal, recover};

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the lock.
    #[error(
        "data directory {} is in use by another ip-counter process{}: its {LOCK} file is locked, \
         and only one process may use a data directory",
        dir.display(),
        holder.as_deref().map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The pid the holder wrote into the lock file, when readable.
        holder: Option<String>,
    },
    /// The directory or its lock file cannot be created or opened.
    #[error("data directory {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A data directory this process holds the lock of (released when the process ends).
#[derive(Debug)]
pub struct DataDir {
    settings: Settings,
    _locks: [File; 2],
}

/// Takes `file`'s lock; `Ok(false)` when another process holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

impl DataDir {
    /// Creates the directory if needed (mode 0700) and takes its lock: the directory's own, which
    /// no file removal can release, and the `LOCK` file's, which older builds take.
    pub fn open(settings: Settings) -> Result<DataDir, OpenError> {
        let dir = settings.dir.clone();
        let io_error = |source| OpenError::Io {
            dir: dir.clone(),
            source,
        };
        if dir.exists() && !dir.is_dir() {
            let what = io::Error::new(io::ErrorKind::NotADirectory, "is a file, not a directory");
            return Err(io_error(what));
        }
        // Owner-only: the files hold every client address seen.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_error)?;
        let path = dir.join(LOCK);
        let directory = File::open(&dir).map_err(io_error)?;
        let mut lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        if !try_lock(&directory).map_err(io_error)? || !try_lock(&lock).map_err(io_error)? {
            let holder = fs::read_to_string(&path)
                .ok()
                .map(|pid| pid.trim().to_string())
                .filter(|pid| !pid.is_empty());
            return Err(OpenError::Locked { dir, holder });
        }
        lock.set_len(0)
            .and_then(|()| writeln!(lock, "{}", std::process::id()))
            .map_err(io_error)?;
        Ok(DataDir {
            settings,
            _locks: [directory, lock],
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.settings.dir
    }

    /// Reads the directory back into `state` (blocking: seconds for tens of millions of
    /// addresses), repairs what a crash left, and starts the log on a new segment.
    pub fn recover<S: Durable>(&self, state: Arc<S>) -> Result<Arc<Wal<S>>, RecoveryError> {
        let dir = &self.settings.dir;
        let started = Instant::now();
        let recovered = recover::read_dir(dir, &*state)?;
        recovered.repair(dir)?;
        let replayed: u64 = recovered.logs.iter().map(|log| log.records).sum();
        tracing::info!(
            dir = %dir.display(),
            holds = %state.describe(),
            snapshot = recovered.snapshot.is_some(),
            segments = recovered.logs.len(),
            records_replayed = replayed,
            took_ms = started.elapsed().as_millis() as u64,
            "data directory read back"
        );
        let io_error = |source| RecoveryError::Io {
            file: dir.clone(),
            source,
        };
        Wal::start(
            dir,
            self.settings.clone(),
            state,
            recovered.next_generation,
            replayed > 0 || !recovered.logs.is_empty(),
        )
        .map_err(io_error)
    }
}
