//! schemathesis (PyPI, installed into target/tools/venv by scripts/install-test-deps.sh) against
//! the real binary and its own `/openapi.json`: no 5xx, every reply's status, headers, content
//! type and body as the document says, schema-violating requests refused, unsupported methods
//! answered 405 with `Allow`.
//!
//! Not checked: that every schema-valid request is accepted (`positive_data_acceptance`). An
//! address is a `string` in the document, since its grammar (SPEC's address rules) is no JSON
//! Schema format, so most generated entries are rightly refused as `invalid_ip`.

use std::path::Path;
use std::time::Duration;

use crate::helpers::{ServerProcess, run_command};

#[test]
fn schemathesis_finds_no_server_error_and_no_reply_off_the_document() {
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin/st");
    assert!(
        st.is_file(),
        "{} is missing: run scripts/install-test-deps.sh (make test does)",
        st.display()
    );
    let server = ServerProcess::start(&[], &[]);
    let schema = format!("http://{}/openapi.json", server.ingest);
    let run = run_command(
        &st,
        &[
            "run",
            &schema,
            "--checks=all",
            "--exclude-checks=positive_data_acceptance",
            "--max-examples=100",
            "--seed=20261128",
            "--workers=1",
            "--request-timeout=10",
        ],
        Duration::from_secs(180),
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "schemathesis found problems:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("passed"), "{}", run.stdout);
}
