//! `ip-counter verify DIR` and `ip-counter repair DIR`: a data directory checked, or rebuilt,
//! offline, as the exact counter's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use std::sync::Arc;

use crate::counter::clock::SystemClock;
use crate::counter::exact::ExactState;
use crate::wal::{SNAPSHOT, recover, repair};

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
    let state = ExactState::new(None, Arc::new(SystemClock));
    match recover::read_dir(&args.dir, &state) {
        Ok(recovered) => {
            match recovered.snapshot {
                Some(s) => println!(
                    "{}: ok, {} IPv4 and {} IPv6 addresses, logs from generation {}",
                    args.dir.join(SNAPSHOT).display(),
                    s.records[0],
                    s.records[1],
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
            let counts = state.set.counts();
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
