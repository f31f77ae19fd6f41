//! A 10-second chaos run against the real binary (`scripts/chaos.py`; `make chaos` runs a
//! minute): valid, invalid and oversized requests, gzip bombs, slow and dropped clients mixed.
//! The service stays up, never answers 5xx, keeps its memory bounded, and counts exactly the
//! valid addresses it acknowledged.

use std::path::Path;
use std::time::Duration;

use crate::helpers::{require_tool, run_command};

#[test]
fn ten_seconds_of_chaos_leave_the_service_up_and_its_count_exact() {
    let python = require_tool("python3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/chaos.py");
    let run = run_command(
        &python,
        &[
            script.to_str().unwrap(),
            "--binary",
            env!("CARGO_BIN_EXE_ip-counter"),
            "--seconds",
            "10",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.status.code(), Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("chaos: passed"), "{}", run.stdout);
}
