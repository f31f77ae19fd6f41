//! `ip-counter send --follow` and `ip-counter send -`, the real binary streaming into the
//! service in-process: lines counted within seconds of being written, through a rotation by
//! rename and a truncation, a restart of `send` that resends nothing, lines written while it
//! was stopped, and a pipe kept open.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{TestApp, command, finish, free_port, metric_sum};

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
}

/// `n` access-log lines, from 10.7.`net`.0 up.
fn lines(net: u8, n: u8) -> impl Iterator<Item = String> {
    (0..n).map(move |i| {
        format!(
            "10.7.{net}.{i} - - [03/Dec/2026:10:00:00 +0000] \"GET /a HTTP/1.1\" 200 5 \"-\" \"-\""
        )
    })
}

/// Waits until the service has counted `n` addresses; fails after `within`.
async fn wait_count(app: &TestApp, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let count = app.unique_count().await;
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "counted {count}, not {n}, within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn received(app: &TestApp) -> f64 {
    metric_sum(
        &app.metrics_text().await,
        "ipcounter_log_entries_received_total",
        &[],
    )
}

/// `send --follow FILE` to the service at `to` (host:port), in `dir`, retrying a failed
/// request once before waiting.
fn follow(to: &str, dir: &Path, file: &Path) -> Child {
    command(
        dir,
        &[
            "send",
            "--follow",
            "--json",
            "--retries=1",
            &format!("--to=http://{to}"),
            file.to_str().unwrap(),
        ],
        &[],
    )
    .spawn()
    .expect("starting ip-counter send --follow")
}

/// SIGTERM, then the run's exit and its summary.
fn stop(child: Child) -> serde_json::Value {
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let run = finish(child, "send --follow", Duration::from_secs(15));
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_sends_new_lines_through_rotation_and_truncation_and_resumes_after_a_restart() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, lines(0, 50));

    let send = follow(&app.ingest.to_string(), dir.path(), &log);
    wait_count(&app, 50, Duration::from_secs(5)).await;
    // A line written now is counted within the second's flush.
    append(&log, lines(1, 1));
    wait_count(&app, 51, Duration::from_secs(3)).await;

    // Rotation by rename: the writer finishes the old file, then writes a new one.
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    append(&dir.path().join("access.log.1"), lines(2, 5));
    append(&log, lines(3, 7));
    wait_count(&app, 63, Duration::from_secs(5)).await;

    // Truncation in place (logrotate's copytruncate).
    std::fs::write(&log, "").unwrap();
    append(&log, lines(4, 3));
    wait_count(&app, 66, Duration::from_secs(5)).await;
    let summary = stop(send);
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert_eq!(summary["unique_ips"], 66, "{summary}");
    let before = received(&app).await;
    assert!(
        dir.path().join("ip-counter-send.state").is_file(),
        "the state file is in the working directory"
    );

    // Written while `send` was stopped: sent after its restart, and nothing sent twice.
    append(&log, lines(5, 4));
    let send = follow(&app.ingest.to_string(), dir.path(), &log);
    wait_count(&app, 70, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        received(&app).await,
        before + 4.0,
        "only the new lines were sent"
    );
    stop(send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_waits_for_a_file_that_appears_later() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("late.log");
    let app = TestApp::spawn().await;
    let send = follow(&app.ingest.to_string(), dir.path(), &log);
    tokio::time::sleep(Duration::from_millis(500)).await;
    append(&log, lines(0, 3));
    wait_count(&app, 3, Duration::from_secs(5)).await;
    stop(send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_read_while_the_service_is_unreachable_are_sent_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, lines(0, 20));
    // Nothing listens there: every attempt fails, and the run keeps trying until stopped.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let send = follow(&nowhere, dir.path(), &log);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let summary = stop(send);
    assert_eq!(summary["requests"], 0, "{summary}");

    let app = TestApp::spawn().await;
    let send = follow(&app.ingest.to_string(), dir.path(), &log);
    wait_count(&app, 20, Duration::from_secs(5)).await;
    stop(send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_piped_into_send_are_counted_while_the_pipe_stays_open() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let mut send = command(
        dir.path(),
        &[
            "send",
            "--json",
            &format!("--to=http://{}", app.ingest),
            "-",
        ],
        &[],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    for i in 0..3 {
        writeln!(stdin, "{{\"ip\":\"192.0.2.{i}\"}}").unwrap();
    }
    stdin.flush().unwrap();
    let started = Instant::now();
    wait_count(&app, 3, Duration::from_secs(2)).await;
    eprintln!("counted {:?} after writing", started.elapsed());

    // A rejected line: the run still ends when the pipe closes, with exit status 3.
    writeln!(stdin, "{{\"ip\":\"not an address\"}}").unwrap();
    drop(stdin);
    let run = finish(send, "send -", Duration::from_secs(10));
    assert_eq!(run.status.code(), Some(3), "{run:?}");
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(summary["accepted"], 3, "{summary}");
    assert_eq!(summary["rejected"], 1, "{summary}");
    assert!(run.stderr.contains("<stdin>:4:"), "{run:?}");
}
