//! Settings, seen from outside: the real binary with environment variables and flags.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{ServerProcess, run_to_exit};

const QUICK: Duration = Duration::from_secs(10);

/// Asserts a run stopped on a bad setting: status 2, one stderr line naming `var`, nothing served.
#[track_caller]
fn assert_refused(args: &[&str], envs: &[(&str, &str)], var: &str) {
    let run = run_to_exit(args, envs, QUICK);
    let context = format!(
        "args {args:?}, env {envs:?}\nstatus: {}\nstdout: {}\nstderr: {}",
        run.status, run.stdout, run.stderr
    );
    assert_eq!(run.status.code(), Some(2), "exit status; {context}");
    let stderr = run.stderr.trim_end();
    assert_eq!(
        stderr.lines().count(),
        1,
        "stderr should be one line; {context}"
    );
    assert!(stderr.contains(var), "stderr should name {var}; {context}");
    assert!(
        !run.stdout.contains("listening"),
        "nothing may be bound; {context}"
    );
}

#[test]
fn a_bad_environment_value_exits_2_naming_the_variable() {
    // Valid ports for the rest, so that only the bad value can stop it.
    let base = [
        ("LOG_PORT", "0"),
        ("METRICS_PORT", "0"),
        ("SERVER_HOST", "127.0.0.1"),
    ];
    for (var, value) in [
        ("LOG_PORT", "70000"),
        ("LOG_PORT", "bad"),
        ("METRICS_PORT", "-1"),
        ("SERVER_HOST", "localhost"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("MAX_BODY_BYTES", "lots"),
        ("MAX_BODY_BYTES", "0"),
    ] {
        let mut envs: Vec<(&str, &str)> = base.iter().copied().filter(|(k, _)| *k != var).collect();
        envs.push((var, value));
        assert_refused(&[], &envs, var);
    }
}

#[test]
fn a_bad_flag_value_exits_2_naming_the_setting() {
    let args = [
        "--log-port=0",
        "--metrics-port=0",
        "--server-host=127.0.0.1",
    ];
    for (flag, var) in [
        ("--log-port=70000", "LOG_PORT"),
        ("--max-body-bytes=-5", "MAX_BODY_BYTES"),
    ] {
        let mut all = args.to_vec();
        all.push(flag);
        assert_refused(&all, &[], var);
    }
    let run = run_to_exit(&["--no-such-flag"], &[], QUICK);
    assert_eq!(run.status.code(), Some(2), "unknown flag: {run:?}");
}

#[test]
fn help_lists_every_setting_and_exits_0() {
    let run = run_to_exit(&["--help"], &[], QUICK);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    for var in [
        "LOG_PORT",
        "METRICS_PORT",
        "SERVER_HOST",
        "LOG_LEVEL",
        "RUST_LOG",
        "LOG_FORMAT",
        "MAX_BODY_BYTES",
        "WINDOWS",
        "MAX_CLOCK_SKEW",
    ] {
        assert!(
            run.stdout.contains(var),
            "--help does not mention {var}:\n{}",
            run.stdout
        );
    }
    for default in ["5000", "9102", "0.0.0.0", "64MiB"] {
        assert!(
            run.stdout.contains(default),
            "--help lacks the default {default}:\n{}",
            run.stdout
        );
    }

    let run = run_to_exit(&["--version"], &[], QUICK);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(run.stdout.contains(env!("CARGO_PKG_VERSION")), "{run:?}");
}

#[tokio::test]
async fn settings_come_from_the_environment_alone() {
    let server = ServerProcess::start_exact(
        &[],
        &[
            ("LOG_PORT", "0"),
            ("METRICS_PORT", "0"),
            ("SERVER_HOST", "127.0.0.1"),
            ("MAX_BODY_BYTES", "300"),
        ],
    );
    assert!(server.ingest.ip().is_loopback(), "{}", server.ingest);
    assert_ne!(server.ingest.port(), 0);
    assert_ne!(server.metrics.port(), 0);
    assert_ne!(server.ingest.port(), server.metrics.port());
    assert_eq!(server.health().await.status, 200);

    let big = json!({"ip": "192.0.2.1", "pad": "z".repeat(400)}).to_string();
    let reply = server
        .client
        .post(server.ingest_url("/logs"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("POST /logs");
    assert_eq!(
        reply.status().as_u16(),
        413,
        "MAX_BODY_BYTES=300 from the environment was ignored"
    );
}

#[tokio::test]
async fn a_flag_wins_over_its_variable() {
    // An invalid variable is never looked at when its flag is given.
    let server = ServerProcess::start(
        &[],
        &[
            ("LOG_PORT", "bad"),
            ("METRICS_PORT", "70000"),
            ("SERVER_HOST", "not-an-address"),
        ],
    );
    let health = server.health().await;
    assert_eq!(health.status, 200, "{}\n{}", health.text, server.output());

    // A valid variable is overridden by the flag too.
    let server = ServerProcess::start(&["--max-body-bytes=1KiB"], &[("MAX_BODY_BYTES", "100")]);
    let reply = server
        .client
        .post(server.ingest_url("/logs"))
        .header("content-type", "application/json")
        .body(json!({"ip": "192.0.2.2", "pad": "z".repeat(500)}).to_string())
        .send()
        .await
        .expect("POST /logs");
    assert_eq!(
        reply.status().as_u16(),
        200,
        "--max-body-bytes=1KiB should beat MAX_BODY_BYTES=100"
    );
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_a_line() {
    let mut server = ServerProcess::start(&[], &[("LOG_FORMAT", "json"), ("LOG_LEVEL", "debug")]);
    let reply = server.post_ip("192.0.2.3").await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text, server.output());
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(5)).code(), Some(0));
    std::thread::sleep(Duration::from_millis(50));
    let stderr = server.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !lines.is_empty(),
        "nothing was logged at debug level\n{}",
        server.output()
    );
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"));
        assert!(value.is_object(), "log line is not an object: {line}");
    }
}

#[tokio::test]
async fn other_log_settings_start() {
    for envs in [
        [("LOG_FORMAT", "text"), ("LOG_LEVEL", "trace")],
        [
            ("LOG_FORMAT", "text"),
            ("RUST_LOG", "ip_counter=trace,warn"),
        ],
    ] {
        let server = ServerProcess::start(&[], &envs);
        let reply = server.post_ip("192.0.2.4").await;
        assert_eq!(
            reply.status,
            200,
            "{envs:?}: {}\n{}",
            reply.text,
            server.output()
        );
        // Written to a pipe, the text log has no colour codes.
        let deadline = std::time::Instant::now() + QUICK;
        while !server.stderr().contains("INFO") && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let log = server.stderr();
        assert!(
            log.contains("INFO") && !log.contains('\x1b'),
            "{envs:?}: {log}"
        );
    }
}

#[test]
fn a_data_dir_naming_a_file_says_so() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    let run = run_to_exit(
        &[
            "--log-port=0",
            "--metrics-port=0",
            "--server-host=127.0.0.1",
        ],
        &[("DATA_DIR", &path)],
        QUICK,
    );
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("{path}: is a file, not a directory")),
        "{}",
        run.stderr
    );
}

/// Absurd durations and sizes are refused before anything binds; they used to start and then
/// panic in deadline arithmetic (recovery never ready, every connection's watchdog).
#[test]
fn absurd_durations_and_sizes_exit_2_naming_the_setting() {
    let base = [
        ("LOG_PORT", "0"),
        ("METRICS_PORT", "0"),
        ("SERVER_HOST", "127.0.0.1"),
        ("PERSISTENCE", "off"),
    ];
    for (var, value) in [
        ("SNAPSHOT_INTERVAL", "300000000000y"),
        ("REQUEST_TIMEOUT", "500000000000y"),
        ("FSYNC_INTERVAL", "1000y"),
        ("MAX_BODY_BYTES", "64PiB"),
    ] {
        let mut envs = base.to_vec();
        envs.push((var, value));
        assert_refused(&[], &envs, var);
    }
}
