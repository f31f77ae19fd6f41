//! `ip-counter verify DIR` and `ip-counter repair DIR`: a data directory checked, or rebuilt,
//! offline: an exact counter's, or (verify only) an approximate one's, told apart by the format
//! version in its files' headers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use std::sync::Arc;

use crate::counter::approx::{APPROX_VERSIONS, ApproxState};
use crate::counter::clock::SystemClock;
use crate::counter::exact::ExactState;
use crate::wal::format::{
    LOG_HEADER_LEN, SNAPSHOT_HEADER_LEN, Version, read_log_header, read_snapshot_header,
};
use crate::wal::{Durable, SNAPSHOT, logs_in, recover, repair};

/// `ip-counter verify`: check a data directory offline.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The data directory (the service's DATA_DIR); best checked while the service is stopped
    pub dir: PathBuf,
}

/// `ip-counter repair`: rebuild a damaged data directory from what can still be read.
#[derive(Debug, Clone, Args)]
pub struct RepairArgs {
    /// The data directory (the service's DATA_DIR); the service must be stopped
    pub dir: PathBuf,
}

/// Runs `ip-counter repair`; exit 0 once the directory reads back whole, 1 when it could not
/// be repaired (in use, unreadable).
pub fn repair(args: &RepairArgs) -> ExitCode {
    if version_of(&args.dir).is_some_and(|v| APPROX_VERSIONS.contains(&v)) {
        eprintln!(
            "error: {}: a COUNT_MODE=approx directory; repair rebuilds exact ones only (for now)",
            args.dir.display()
        );
        return ExitCode::FAILURE;
    }
    match repair::repair(&args.dir, || ExactState::new(None, Arc::new(SystemClock))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `ip-counter verify`: reads the whole directory as recovery would, without changing it,
/// and prints what it holds; exit 0 when recovery would succeed (a torn tail is reported and
/// would be dropped), 1 with the damaged file and offset when it would refuse.
pub fn verify(args: &VerifyArgs) -> ExitCode {
    if version_of(&args.dir).is_some_and(|v| APPROX_VERSIONS.contains(&v)) {
        let state = ApproxState::reading();
        let sections = |r: [u64; 2]| format!("its key and {} bytes of sketches", r[1]);
        return verify_state(args, &state, sections, |state| {
            state.read_back();
            format!("estimate: {}", state.describe())
        });
    }
    let state = ExactState::new(None, Arc::new(SystemClock));
    let sections = |r: [u64; 2]| format!("{} IPv4 and {} IPv6 addresses", r[0], r[1]);
    verify_state(args, &state, sections, |state| {
        let counts = state.set.counts();
        format!(
            "unique addresses: {} ({} IPv4, {} IPv6)",
            counts.total(),
            counts.ipv4,
            counts.ipv6
        )
    })
}

/// The format version of `dir`'s snapshot, or else of its oldest log; `None` when it has
/// neither or their headers do not read (verify then reports them as the exact kind would).
fn version_of(dir: &Path) -> Option<Version> {
    let head = |path: &Path, len: usize| -> Option<Vec<u8>> {
        let mut bytes = Vec::with_capacity(len);
        std::fs::File::open(path)
            .ok()?
            .take(len as u64)
            .read_to_end(&mut bytes)
            .ok()?;
        Some(bytes)
    };
    if let Some(bytes) = head(&dir.join(SNAPSHOT), SNAPSHOT_HEADER_LEN) {
        return read_snapshot_header(&bytes).ok().map(|h| h.version);
    }
    let (_, oldest) = logs_in(dir).ok()?.into_iter().next()?;
    let bytes = head(&oldest, LOG_HEADER_LEN)?;
    read_log_header(&bytes).ok().map(|(_, version)| version)
}

/// Reads `args.dir` into `state` as recovery would and prints each file (the snapshot's
/// sections' record counts as `sections` says them), then what it `holds`.
fn verify_state<S: Durable>(
    args: &VerifyArgs,
    state: &S,
    sections: impl Fn([u64; 2]) -> String,
    holds: impl Fn(&S) -> String,
) -> ExitCode {
    match recover::read_dir(&args.dir, state) {
        Ok(recovered) => {
            match recovered.snapshot {
                Some(s) => println!(
                    "{}: ok, {}, logs from generation {}",
                    args.dir.join(SNAPSHOT).display(),
                    sections(s.records),
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
            println!("{}", holds(state));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
