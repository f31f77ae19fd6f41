//! The data directory as an operator can break it, with the real binary: files removed or put
//! back from a backup (the start refuses, naming what is missing), the lock file removed (a
//! second process is still refused), the directory removed or replaced while running (writes
//! 503, `/ready` 503), and every repair the error messages advise, followed as written.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::helpers::{Finished, ServerProcess, run_to_exit};
use crate::persistence::{addresses, flip, logs, post_each, start, start_refused, verify};

/// Posts `ips` and stops the service cleanly.
async fn post_and_stop(mut server: ServerProcess, ips: &[String]) {
    post_each(&server, ips).await;
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}

/// Starts on `dir` (the start after a replay folds the logs into a snapshot), waits for that
/// snapshot, posts `ips` and stops: the directory then holds a snapshot and a log after it.
async fn restart_and_post(dir: &Path, ips: &[String]) {
    let server = start(dir, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while logs(dir).len() > 1 || !dir.join("snapshot.bin").exists() {
        assert!(Instant::now() < deadline, "no start-up snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    post_and_stop(server, ips).await;
}

fn repair(dir: &Path) -> Finished {
    run_to_exit(
        &["repair", &dir.display().to_string()],
        &[],
        Duration::from_secs(30),
    )
}

/// Follows "run `ip-counter repair DIR`" from a refusal: it must name this directory, and the
/// start after it must succeed.
async fn follow_repair(dir: &Path, refused: &Finished) -> ServerProcess {
    let hint = format!("ip-counter repair {}", dir.display());
    assert!(refused.stderr.contains(&hint), "{}", refused.stderr);
    let repaired = repair(dir);
    assert!(repaired.status.success(), "{repaired:?}");
    assert!(repaired.stdout.contains("repaired"), "{repaired:?}");
    let report = verify(dir);
    assert!(report.status.success(), "verify after repair: {report:?}");
    start(dir, &[]).await
}

#[tokio::test]
async fn a_deleted_snapshot_stops_the_start_and_repair_keeps_the_logs() {
    let data = tempfile::tempdir().unwrap();
    let ips = addresses(0, 60);
    post_and_stop(start(data.path(), &[]).await, &ips[..40]).await;
    restart_and_post(data.path(), &ips[40..]).await;

    std::fs::remove_file(data.path().join("snapshot.bin")).unwrap();
    let refused = start_refused(data.path());
    assert!(
        refused.stderr.contains("snapshot.bin is missing"),
        "{}",
        refused.stderr
    );
    let report = verify(data.path());
    assert_eq!(report.status.code(), Some(1), "{report:?}");
    assert!(
        report.stderr.contains("snapshot.bin is missing"),
        "{report:?}"
    );

    let server = follow_repair(data.path(), &refused).await;
    // The snapshot's 40 are gone with it; the log's 20 are kept.
    assert_eq!(server.unique_count().await, 20);
    assert_eq!(server.post_batch(&ips[40..]).await.json()["new_ips"], 0);
}

#[tokio::test]
async fn an_older_snapshot_put_back_stops_the_start() {
    let data = tempfile::tempdir().unwrap();
    let ips = addresses(100, 90);
    post_and_stop(start(data.path(), &[]).await, &ips[..30]).await;
    restart_and_post(data.path(), &ips[30..60]).await;
    let older = std::fs::read(data.path().join("snapshot.bin")).unwrap();
    restart_and_post(data.path(), &ips[60..]).await;

    std::fs::write(data.path().join("snapshot.bin"), older).unwrap();
    let refused = start_refused(data.path());
    assert!(
        refused.stderr.contains("is missing") && refused.stderr.contains("older snapshot.bin"),
        "{}",
        refused.stderr
    );
    // The start removed nothing: the newer log is still there for repair to read.
    let server = follow_repair(data.path(), &refused).await;
    assert_eq!(server.unique_count().await, 60);
    assert_eq!(server.post_batch(&ips[..30]).await.json()["new_ips"], 0);
    assert_eq!(server.post_batch(&ips[60..]).await.json()["new_ips"], 0);
}

#[tokio::test]
async fn a_missing_log_generation_stops_the_start() {
    let data = tempfile::tempdir().unwrap();
    let ips = addresses(300, 30);
    post_and_stop(start(data.path(), &[]).await, &ips[..10]).await;
    restart_and_post(data.path(), &ips[10..20]).await;
    // A log after the current one, as if one generation between them had been removed.
    let current = logs(data.path()).pop().unwrap();
    let name = current.file_name().unwrap().to_str().unwrap();
    let generation: u64 = name[4..24].parse().unwrap();
    let later = data.path().join(format!("log-{:020}.bin", generation + 2));
    std::fs::copy(&current, &later).unwrap();

    let refused = start_refused(data.path());
    assert!(
        refused
            .stderr
            .contains(&format!("log generation {} is missing", generation + 1)),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn a_log_created_but_never_written_is_dropped_at_start() {
    let data = tempfile::tempdir().unwrap();
    let ips = addresses(400, 20);
    post_and_stop(start(data.path(), &[]).await, &ips).await;
    // A kill between creating the next log and writing its header leaves it empty.
    let next = data.path().join(format!("log-{:020}.bin", 1));
    std::fs::write(&next, b"").unwrap();
    let report = verify(data.path());
    assert!(report.status.success(), "{report:?}");
    let server = start(data.path(), &[]).await;
    assert_eq!(server.unique_count().await, 20);
}

#[tokio::test]
async fn removing_the_lock_file_lets_no_second_process_in() {
    let data = tempfile::tempdir().unwrap();
    let first = start(data.path(), &[]).await;
    post_each(&first, &addresses(0, 5)).await;
    std::fs::remove_file(data.path().join("LOCK")).unwrap();
    let second = start_refused(data.path());
    assert!(
        second
            .stderr
            .contains("in use by another ip-counter process"),
        "{}",
        second.stderr
    );
    // The first one's log is untouched: it still writes, and a restart has everything.
    post_and_stop(first, &addresses(5, 5)).await;
    let server = start(data.path(), &[]).await;
    assert_eq!(server.unique_count().await, 10);
}

async fn ready_status(server: &ServerProcess) -> u16 {
    let reply = server.client.get(server.ingest_url("/ready")).send().await;
    reply.unwrap().status().as_u16()
}

async fn writable_gauge(server: &ServerProcess) -> f64 {
    let text = server.metrics_text().await;
    crate::helpers::metric_value(&text, "ipcounter_persistence_writable")
}

/// Polls until `/ready` answers `status`; fails after `within`.
async fn wait_ready_status(server: &ServerProcess, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while ready_status(server).await != status {
        assert!(
            Instant::now() < deadline,
            "/ready did not turn {status} within {within:?}\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_data_directory_removed_or_replaced_while_running_refuses_writes() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let server = start(&dir, &["--fsync-interval=200ms"]).await;
    post_each(&server, &addresses(0, 5)).await;

    // Replaced: moved away and a new empty directory put in its place.
    let moved = parent.path().join("data.old");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::create_dir(&dir).unwrap();
    wait_ready_status(&server, 503, Duration::from_secs(1)).await;
    let reply = server.post_ip("192.0.2.1").await;
    reply.assert_error(503, "storage_unavailable");
    assert!(reply.text.contains("removed or replaced"), "{}", reply.text);
    assert_eq!(writable_gauge(&server).await, 0.0);
    // Repeats and reads go on.
    let reply = server.post_ip(&addresses(0, 1)[0]).await;
    assert_eq!(reply.json()["message"], "IP already seen", "{}", reply.text);
    assert_eq!(server.unique_count().await, 5);

    // Put back: a snapshot makes it whole and writes resume.
    std::fs::remove_dir(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    wait_ready_status(&server, 200, Duration::from_secs(5)).await;
    assert_eq!(writable_gauge(&server).await, 1.0);
    assert_eq!(server.post_ip("192.0.2.1").await.status, 200);

    // Removed outright.
    std::fs::remove_dir_all(&dir).unwrap();
    wait_ready_status(&server, 503, Duration::from_secs(1)).await;
    server
        .post_ip("192.0.2.2")
        .await
        .assert_error(503, "storage_unavailable");
}

#[tokio::test]
async fn a_removed_log_file_is_written_again_by_a_snapshot() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &["--fsync-interval=100ms"]).await;
    let ips = addresses(500, 20);
    post_each(&server, &ips[..10]).await;
    for log in logs(data.path()) {
        std::fs::remove_file(log).unwrap();
    }
    // Noticed within FSYNC_INTERVAL and repaired by the snapshot that follows.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !data.path().join("snapshot.bin").exists() || logs(data.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "not repaired\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_ready_status(&server, 200, Duration::from_secs(5)).await;
    post_and_stop(server, &ips[10..]).await;
    let server = start(data.path(), &[]).await;
    assert_eq!(server.unique_count().await, 20);
}

/// Every damage message's advice, followed as written: truncating a log at the damage keeps
/// the frames before it; `ip-counter repair` mends a damaged log header and a damaged snapshot.
#[tokio::test]
async fn every_repair_the_messages_advise_works_when_followed() {
    let data = tempfile::tempdir().unwrap();
    let ips = addresses(600, 12);
    let mut server = start(data.path(), &[]).await;
    post_each(&server, &ips).await;
    server.kill_9();

    // A damaged record in the third frame: "truncate -s OFFSET FILE".
    let log = logs(data.path()).remove(0);
    let third = 20 + 2 * (12 + crate::persistence::RECORD);
    flip(&log, third + 12 + 5);
    let refused = start_refused(data.path());
    let hint = format!("truncate -s {third} {}", log.display());
    assert!(refused.stderr.contains(&hint), "{}", refused.stderr);
    let status = std::process::Command::new("truncate")
        .args(["-s", &third.to_string(), &log.display().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut server = start(data.path(), &[]).await;
    assert_eq!(server.unique_count().await, 2);
    post_each(&server, &ips[2..]).await;
    server.kill_9();

    // A damaged log header: truncation cannot help, so no truncation is advised.
    let log = logs(data.path()).pop().unwrap();
    flip(&log, 3);
    let refused = start_refused(data.path());
    assert!(
        !refused.stderr.contains("truncate -s"),
        "{}",
        refused.stderr
    );
    let mut server = follow_repair(data.path(), &refused).await;
    assert_eq!(
        server.unique_count().await,
        12,
        "the frames after a bad header are kept"
    );
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).success());

    // A damaged snapshot: repair keeps its frames before the damage.
    let snapshot = data.path().join("snapshot.bin");
    let len = std::fs::metadata(&snapshot).unwrap().len() as usize;
    flip(&snapshot, len - 5);
    let refused = start_refused(data.path());
    assert!(
        !refused.stderr.contains("truncate -s"),
        "{}",
        refused.stderr
    );
    let server = follow_repair(data.path(), &refused).await;
    let kept = server.unique_count().await;
    assert!(kept < 12, "{kept}");
    assert_eq!(
        server.post_batch(&ips).await.json()["new_ips"],
        12 - kept,
        "the count is exactly the addresses kept"
    );
}
