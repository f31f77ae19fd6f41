//! `ip-counter repair DIR`: makes a damaged or incomplete data directory start again, keeping
//! every address that can still be read.
//!
//! It reads what it can (the snapshot's and every log's whole frames up to their damage, logs
//! the snapshot already includes too, as they may hold what a damaged snapshot lost), then
//! writes one new snapshot of it all beside a new empty log, as a snapshot in the service does.
//! The files it replaces are first hard-linked into `DIR/damaged-<unix time>/`, so nothing is
//! deleted and a crash at any step leaves either the old directory (repair can run again) or
//! the repaired one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::format;
use super::{
    DataDir, Durability, Durable, SNAPSHOT, SNAPSHOT_TMP, Settings, Wal, logs_in, recover,
};

/// What repair read of one file.
#[derive(Debug)]
struct FileRead {
    path: PathBuf,
    records: u64,
    stopped: Option<format::Damage>,
}

/// Rebuilds the data directory `dir` of the state `S` (which starts as `empty()`) from what can
/// still be read, printing what it keeps; an error when it is in use or cannot be read or
/// written.
pub fn repair<S: Durable>(dir: &Path, empty: impl Fn() -> S) -> io::Result<()> {
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no such data directory", dir.display()),
        ));
    }
    let settings = Settings {
        dir: dir.to_path_buf(),
        durability: Durability::Fsync,
        fsync_interval: Duration::from_secs(1),
        snapshot_interval: Duration::from_secs(3600),
    };
    let _held = DataDir::open(settings.clone()).map_err(io::Error::other)?;
    if recover::read_dir(dir, &empty()).is_ok() {
        println!("{}: reads back whole; nothing to repair", dir.display());
        return Ok(());
    }

    let state = Arc::new(empty());
    let (read, next_generation) = salvage(dir, &*state)?;
    for file in &read {
        match &file.stopped {
            None => println!("{}: kept all {} records", file.path.display(), file.records),
            Some(damage) => println!(
                "{}: kept {} records; dropped what follows byte offset {} ({})",
                file.path.display(),
                file.records,
                damage.offset,
                damage.what
            ),
        }
    }

    let kept = keep_dir(dir)?;
    for file in &read {
        fs::hard_link(
            &file.path,
            kept.join(file.path.file_name().expect("a file name")),
        )?;
    }
    super::sync_dir(&kept)?;

    // The new segment comes after every old one, so the new snapshot supersedes them all.
    let wal = Wal::start(dir, settings, state.clone(), next_generation, false)?;
    let done = wal.snapshot()?;
    wal.close()?;
    let _ = fs::remove_file(dir.join(SNAPSHOT_TMP));
    println!(
        "{}: repaired: {} in a new snapshot of {} bytes; the files it replaced are in {} \
         (delete it once satisfied)",
        dir.display(),
        state.describe(),
        done.bytes,
        kept.display()
    );
    Ok(())
}

/// Creates `DIR/damaged-<unix time>/` (with `-2`, `-3`, ... after it when a repair in the same
/// second made one already).
fn keep_dir(dir: &Path) -> io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let mut n = 1;
    loop {
        let name = match n {
            1 => format!("damaged-{secs}"),
            n => format!("damaged-{secs}-{n}"),
        };
        match fs::create_dir(dir.join(&name)) {
            Ok(()) => return Ok(dir.join(name)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Reads every whole frame of the snapshot and the segments into `state`; returns what was read
/// of each file and the generation a new segment must have to come after all of them.
fn salvage<S: Durable>(dir: &Path, state: &S) -> io::Result<(Vec<FileRead>, u64)> {
    let mut read = Vec::new();
    let mut next_generation = 0;
    let path = dir.join(SNAPSHOT);
    match fs::read(&path) {
        Ok(bytes) => {
            let salvaged = format::salvage_snapshot(
                &bytes,
                S::sections,
                state.version(),
                |version, section, records| state.load(version, section, records),
            );
            if let Ok(header) = format::read_snapshot_header(&bytes) {
                next_generation = header.generation + 1;
            }
            read.push(FileRead {
                path,
                records: salvaged.records,
                stopped: salvaged.stopped,
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for (generation, path) in logs_in(dir)? {
        next_generation = next_generation.max(generation + 1);
        let bytes = fs::read(&path)?;
        let (records, end) =
            recover::replay_log(&bytes, state, Some(likeliest_version::<S>(&bytes)));
        read.push(FileRead {
            path,
            records,
            stopped: end.err(),
        });
    }
    Ok((read, next_generation))
}

/// The format version whose record length reads the most whole frames of a segment whose
/// header may be damaged: the header's own when it reads.
fn likeliest_version<S: Durable>(bytes: &[u8]) -> format::Version {
    if let Ok((_, version)) = format::read_log_header(bytes) {
        return version;
    }
    let start = format::LOG_HEADER_LEN.min(bytes.len());
    (1..=format::Version::MAX)
        .filter_map(|v| S::record_len(v).map(|len| (v, len)))
        .max_by_key(|&(_, len)| {
            let mut frames = 0u64;
            let _ = format::read_frames(bytes, start, len, |_| frames += 1);
            frames
        })
        .map_or(1, |(v, _)| v)
}
