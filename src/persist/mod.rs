//! Persistence: the data directory that makes the count survive restarts and crashes.
//!
//! `DATA_DIR` holds, all in the formats of [`format`](mod@format):
//! - `LOCK`: the pid of the one process using the directory, which holds a lock (`flock`) on
//!   the directory itself, so that removing this file lets no second process in (and on this
//!   file, which older builds lock);
//! - `log-<generation>.bin`: the address log, appended to by [`journal`];
//! - `snapshot.bin`: every address up to some log generation, replaced atomically
//!   (`snapshot.bin.tmp`, synced, renamed, directory synced).
//!
//! At start [`DataDir::open`] takes the lock before anything binds; [`DataDir::recover`] reads
//! the snapshot and the logs after it into the store ([`recover`]), then starts the
//! [`journal::Journal`] on a new log. `ip-counter verify DIR` ([`verify`]) reads a directory
//! offline and reports what recovery would find.

pub mod crash;
pub mod format;
pub mod journal;
pub mod recover;
pub mod repair;

use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::store::Store;
pub use journal::{Journal, StorageError};
pub use recover::RecoveryError;

/// The snapshot's file name.
pub const SNAPSHOT: &str = "snapshot.bin";
/// The snapshot being written.
pub const SNAPSHOT_TMP: &str = "snapshot.bin.tmp";
const LOCK: &str = "LOCK";

/// The path of log `generation` in `dir`.
pub fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation:020}.bin"))
}

/// The generation of a log file's name, `None` for any other file.
pub(crate) fn log_generation(name: &str) -> Option<u64> {
    name.strip_prefix("log-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()
}

/// The log files in `dir` with their generations, oldest first.
pub fn logs_in(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut logs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(generation) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(log_generation)
        {
            logs.push((generation, path));
        }
    }
    logs.sort_unstable();
    Ok(logs)
}

/// Makes a directory's entries (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a 2xx promises about the addresses it counted (`DURABILITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// The log was written (`write()` returned): survives a killed process; synced every
    /// `FSYNC_INTERVAL`.
    Buffered,
    /// The log was synced (`fdatasync`): survives a power loss.
    Fsync,
}

/// The persistence settings, validated with the rest of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATA_DIR`.
    pub dir: PathBuf,
    /// `DURABILITY`.
    pub durability: Durability,
    /// `FSYNC_INTERVAL`.
    pub fsync_interval: Duration,
    /// `SNAPSHOT_INTERVAL`.
    pub snapshot_interval: Duration,
}

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

    /// Reads the directory back into `store` (blocking: seconds for tens of millions of
    /// addresses), repairs what a crash left, and starts the journal on a new log.
    pub fn recover(&self, store: Arc<Store>) -> Result<Arc<Journal>, RecoveryError> {
        let dir = &self.settings.dir;
        let started = Instant::now();
        let recovered = recover::read_dir(dir, &store)?;
        recovered.repair(dir)?;
        let replayed: u64 = recovered.logs.iter().map(|log| log.records).sum();
        let counts = store.counts();
        tracing::info!(
            dir = %dir.display(),
            ipv4 = counts.ipv4,
            ipv6 = counts.ipv6,
            snapshot = recovered.snapshot.is_some(),
            logs = recovered.logs.len(),
            log_records = replayed,
            took_ms = started.elapsed().as_millis() as u64,
            "data directory read back"
        );
        let io_error = |source| RecoveryError::Io {
            file: dir.clone(),
            source,
        };
        Journal::start(
            dir,
            self.settings.clone(),
            store,
            recovered.next_generation,
            replayed > 0 || !recovered.logs.is_empty(),
        )
        .map_err(io_error)
    }
}

/// `ip-counter verify`: check a data directory offline.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The data directory (the service's DATA_DIR); best checked while the service is stopped
    pub dir: PathBuf,
}

/// Runs `ip-counter verify`: reads the whole directory as recovery would, without changing it,
/// and prints what it holds; exit 0 when recovery would succeed (a torn tail is reported and
/// would be dropped), 1 with the damaged file and offset when it would refuse.
pub fn verify(args: &VerifyArgs) -> ExitCode {
    let store = Store::exact();
    match recover::read_dir(&args.dir, &store) {
        Ok(recovered) => {
            match recovered.snapshot {
                Some(s) => println!(
                    "{}: ok, {} IPv4 and {} IPv6 addresses, logs from generation {}",
                    args.dir.join(SNAPSHOT).display(),
                    s.ipv4,
                    s.ipv6,
                    s.generation
                ),
                None => println!("no snapshot"),
            }
            for log in &recovered.logs {
                let tail = match (log.torn_bytes, log.zeros) {
                    (0, _) => String::new(),
                    (bytes, true) => format!(
                        "; {bytes} bytes of zeros (allocated ahead) at offset {}",
                        log.good_len
                    ),
                    (bytes, false) => format!(
                        "; torn tail of {bytes} bytes at offset {} would be dropped",
                        log.good_len
                    ),
                };
                println!(
                    "{}: ok, {} frames, {} records{tail}",
                    log.path.display(),
                    log.frames,
                    log.records
                );
            }
            for path in &recovered.superseded {
                println!(
                    "{}: already in the snapshot, would be removed",
                    path.display()
                );
            }
            if let Some(path) = &recovered.unstarted {
                println!(
                    "{}: created but never written (a crash while starting it), would be removed",
                    path.display()
                );
            }
            let counts = store.counts();
            println!(
                "unique addresses: {} ({} IPv4, {} IPv6)",
                counts.total(),
                counts.ipv4,
                counts.ipv6
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
