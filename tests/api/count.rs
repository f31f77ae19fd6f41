//! `ip-counter count`, the real binary on temporary files: formats, gzip, stdin, `--format`,
//! `--json`, notes on stderr, and unreadable inputs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

use crate::helpers::{Finished, command, run_to_exit};

const QUICK: Duration = Duration::from_secs(30);

/// Writes `data` to `dir/name`, gzip-compressed when the name ends in `.gz`.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let bytes = if name.ends_with(".gz") {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    } else {
        data.to_vec()
    };
    std::fs::write(&path, bytes).unwrap();
    path
}

fn count(args: &[&str]) -> Finished {
    let mut all = vec!["count"];
    all.extend_from_slice(args);
    run_to_exit(&all, &[], QUICK)
}

#[track_caller]
fn json_summary(run: &Finished) -> Value {
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {run:?}"))
}

const COMBINED: &str = "83.150.59.250 - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/1.1\" 200 612 \"-\" \"curl/8\"\n\
    10.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /a.gif HTTP/1.0\" 200 2326\n\
    2001:db8::1 - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/2.0\" 200 1 \"-\" \"-\"\n\
    \n\
    - - - [24/Jun/2020:15:27:00 +0000] \"-\" 400 0 \"-\" \"-\"\n\
    83.150.59.250 - - [24/Jun/2020:15:27:01 +0000] \"GET /b HTTP/1.1\" 200 1 \"-\" \"-\"\n";

const ENTRIES: &str = "{\"ip\":\"10.0.0.1\"}\n\
    {\"ip\":\"2001:0DB8::1\",\"timestamp\":\"2020-06-24T15:27:00Z\"}\r\n\
    {\"ip\":\"192.0.2.1\"}\n\
    {\"ip\":\"nope\"}\n";

#[test]
fn prints_the_number_of_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_file(dir.path(), "access.log", COMBINED.as_bytes());
    let run = count(&[log.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert_eq!(run.stdout, "3\n", "{run:?}");
    // The `-` line is reported on stderr, never on stdout.
    assert!(
        run.stderr.contains("access.log") && run.stderr.contains("line 5"),
        "{run:?}"
    );
}

#[test]
fn json_summary_over_several_files_of_both_formats_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let text = write_file(dir.path(), "access.log.gz", COMBINED.as_bytes());
    let ndjson = write_file(dir.path(), "entries.ndjson", ENTRIES.as_bytes());
    let run = count(&["--json", text.to_str().unwrap(), ndjson.to_str().unwrap()]);
    // 83.150.59.250, 10.0.0.1, 2001:db8::1 from the log; 192.0.2.1 only from the entries.
    assert_eq!(
        json_summary(&run),
        json!({"total": 4, "ipv4": 3, "ipv6": 1, "lines": 9, "rejected": 2})
    );
}

#[test]
fn reads_standard_input_when_no_file_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let packed = write_file(dir.path(), "in.gz", ENTRIES.as_bytes());
    for (args, input) in [(&["count"][..], &packed), (&["count", "-"][..], &packed)] {
        let output = command(dir.path(), args, &[])
            .stdin(Stdio::from(std::fs::File::open(input).unwrap()))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "3\n", "{output:?}");
    }
}

#[test]
fn format_can_be_forced() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "mixed",
        b"10.0.0.2 x\n{\"ip\":\"10.0.0.1\"}\n10.0.0.3 y\n",
    );
    let path = file.to_str().unwrap();
    let total = |args: &[&str]| json_summary(&count(args))["total"].clone();
    assert_eq!(total(&["--json", path]), 2, "detected as text");
    assert_eq!(total(&["--json", "--format=text", path]), 2);
    assert_eq!(total(&["--json", "--format=ndjson", path]), 1);
    let run = count(&["--format=xml", path]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
}

#[test]
fn a_big_file_is_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = String::new();
    for i in 0..300_000u32 {
        let n = i % 100_000;
        log.push_str(&format!(
            "10.{}.{}.{} - - [24/Jun/2020:15:27:00 +0000] \"GET /{i} HTTP/1.1\" 200 1 \"-\" \"-\"\n",
            n >> 16,
            (n >> 8) & 255,
            n & 255
        ));
    }
    let plain = write_file(dir.path(), "big.log", log.as_bytes());
    let packed = write_file(dir.path(), "big.log.gz", log.as_bytes());
    for file in [plain, packed] {
        let summary = json_summary(&count(&["--json", file.to_str().unwrap()]));
        assert_eq!(
            summary,
            json!({"total": 100_000, "ipv4": 100_000, "ipv6": 0, "lines": 300_000, "rejected": 0}),
            "{}",
            file.display()
        );
    }
}

#[test]
fn approx_estimates_a_big_file_within_three_standard_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = String::new();
    for i in 0..200_000u32 {
        let n = i % 100_000;
        log.push_str(&format!(
            "{{\"ip\":\"10.{}.{}.{}\"}}\n",
            n >> 16,
            (n >> 8) & 255,
            n & 255
        ));
    }
    let file = write_file(dir.path(), "big.ndjson", log.as_bytes());
    let summary = json_summary(&count(&["--approx", "--json", file.to_str().unwrap()]));
    let total = summary["total"].as_f64().unwrap();
    assert!(
        (total - 100_000.0).abs() < 3.0 * 0.008_125 * 100_000.0,
        "{summary}"
    );
    assert_eq!(summary["lines"], 200_000);
    assert_eq!(summary["ipv6"], 0);
}

#[test]
fn an_unreadable_file_fails_naming_it() {
    let run = count(&["/nonexistent/access.log"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("/nonexistent/access.log"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn the_service_settings_do_not_apply_to_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_file(dir.path(), "a.log", b"10.0.0.1 x\n");
    let run = run_to_exit(
        &["count", log.to_str().unwrap()],
        &[("LOG_PORT", "not-a-port")],
        QUICK,
    );
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert_eq!(run.stdout, "1\n");
    // Without a terminal on stderr there is no progress bar.
    assert!(run.stderr.is_empty(), "{run:?}");
}
