//! `COUNT_MODE=approx` against the real binary: an estimate within three standard errors, the
//! mode in `/stats` and `/metrics`, and a data directory that keeps the sketch across kill -9 so
//! that re-posting every acknowledged address changes nothing.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Reply, ServerProcess, metric_sum, run_to_exit};
use crate::persistence::{addresses, start, verify};

const APPROX: &[&str] = &["--count-mode=approx", "--windows="];
/// With the default windows (5m,1h,24h): format version 4.
const APPROX_WINDOWS: &[&str] = &["--count-mode=approx"];

async fn stats(server: &ServerProcess) -> Value {
    let reply = server.client.get(server.ingest_url("/stats")).send().await;
    let reply = Reply::read(reply.expect("GET /stats")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

/// Posts `ips` in batches of 5,000; the sum of their `new_ips`.
async fn post_all(server: &ServerProcess, ips: &[String]) -> u64 {
    let mut new = 0;
    for batch in ips.chunks(5_000) {
        let reply = server.post_batch(batch).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        new += reply.json()["new_ips"].as_u64().unwrap();
    }
    new
}

#[tokio::test]
async fn an_estimate_within_three_standard_errors_that_survives_kill_9() {
    survives_kill_9(APPROX).await;
}

/// With windows, the windows' rings survive as the totals do; entries without a time count
/// at arrival, so every window holds them all.
#[tokio::test]
async fn with_windows_an_estimate_and_its_windows_survive_kill_9() {
    survives_kill_9(APPROX_WINDOWS).await;
}

async fn survives_kill_9(flags: &[&str]) {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path(), flags).await;
    let ips = addresses(0, 100_000);
    post_all(&server, &ips).await;
    let before = stats(&server).await;
    assert_eq!(before["mode"], "approx");
    let rse = before["relative_standard_error"].as_f64().unwrap();
    assert!((rse - 1.04 / 128.0).abs() < 1e-9, "{before}");
    let estimate = before["unique_ip_addresses"].as_u64().unwrap();
    let error = (estimate as f64 - 100_000.0).abs() / 100_000.0;
    assert!(error < 3.0 * rse, "estimate {estimate}: {before}");
    // The families are sketched apart: a fifth of the addresses are IPv6.
    let ipv6 = before["unique_ipv6"].as_u64().unwrap() as f64;
    assert!((ipv6 - 20_000.0).abs() / 20_000.0 < 3.0 * rse, "{before}");

    let metrics = server.metrics_text().await;
    assert_eq!(
        metric_sum(&metrics, "ipcounter_count_mode", &[("mode", "approx")]),
        1.0
    );
    assert_eq!(
        metric_sum(&metrics, "ipcounter_count_relative_standard_error", &[]),
        rse
    );
    // The data directory's health, as with the exact kind.
    assert_eq!(
        metric_sum(&metrics, "ipcounter_persistence_writable", &[]),
        1.0
    );

    // Windows are sketched at lg_k 12 (relative standard error 1.6 %).
    let windows = before["windows"].as_object().cloned().unwrap_or_default();
    assert_eq!(
        windows.len(),
        if flags == APPROX { 0 } else { 3 },
        "{before}"
    );
    for (label, count) in &windows {
        let error = (count.as_f64().unwrap() - 100_000.0).abs() / 100_000.0;
        assert!(error < 3.0 * 1.04 / 64.0, "{label}: {before}");
    }

    server.kill_9();
    let server = start(data.path(), flags).await;
    let after = stats(&server).await;
    assert_eq!(after["unique_ip_addresses"], estimate, "{after}");
    let close = |a: &Value, b: &Value| a.as_f64().unwrap() / b.as_f64().unwrap() - 1.0;
    for (label, count) in &windows {
        let restored = &after["windows"][label];
        assert!(close(restored, count).abs() < 0.01, "{label}: {after}");
    }
    assert_eq!(
        post_all(&server, &ips).await,
        0,
        "re-posting changed the sketch"
    );
    let again = stats(&server).await;
    assert_eq!(again["unique_ip_addresses"], estimate);
    assert_eq!(
        again["windows"], after["windows"],
        "re-posting moved a window"
    );
    // And a single repeat says so.
    let reply = server.post_ip(&ips[7]).await;
    assert_eq!(reply.json()["message"], "IP already seen", "{}", reply.text);

    // verify reads the directory offline to the same estimate; repair does not touch it.
    drop(server);
    let report = verify(data.path());
    assert!(report.status.success(), "{report:?}");
    let line = format!("estimate: about {estimate} unique addresses");
    assert!(report.stdout.contains(&line), "{}", report.stdout);
    assert!(
        report.stdout.contains("bytes of sketches"),
        "{}",
        report.stdout
    );
    let dir = data.path().display().to_string();
    let repair = run_to_exit(&["repair", &dir], &[], Duration::from_secs(20));
    assert_eq!(repair.status.code(), Some(1), "{repair:?}");
    assert!(
        repair.stderr.contains("COUNT_MODE=approx"),
        "{}",
        repair.stderr
    );
}

#[tokio::test]
async fn approx_refuses_what_it_cannot_do_yet_and_the_directory_of_another_mode() {
    for (flags, says) in [
        (
            &[
                "--count-mode=auto",
                "--store=redis",
                "--redis-url=redis://127.0.0.1:1",
            ][..],
            "cannot be shared yet",
        ),
        (
            &["--count-mode=approx", "--windows=", "--hll-precision=22"][..],
            "HLL_PRECISION",
        ),
    ] {
        let mut args = vec!["--log-port=0", "--metrics-port=0"];
        args.extend_from_slice(flags);
        let run = run_to_exit(&args, &[], Duration::from_secs(20));
        assert_eq!(run.status.code(), Some(2), "{flags:?}: {run:?}");
        assert!(run.stderr.contains(says), "{flags:?}: {}", run.stderr);
    }
    // An exact directory is not read as a sketch, nor the other way round.
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]).await;
    assert_eq!(server.post_batch(&addresses(0, 10)).await.status, 200);
    drop(server);
    let flag = format!("--data-dir={}", data.path().display());
    let mut args = vec!["--log-port=0", "--metrics-port=0", flag.as_str()];
    args.extend_from_slice(APPROX);
    let run = run_to_exit(&args, &[], Duration::from_secs(20));
    assert!(
        !run.status.success(),
        "an exact directory opened as approx: {run:?}"
    );
    assert!(run.stderr.contains("COUNT_MODE=exact"), "{}", run.stderr);
}

/// Polls `/ready` until it answers `status`.
async fn ready_becomes(server: &ServerProcess, status: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ready = server.client.get(server.ingest_url("/ready")).send().await;
        if ready.is_ok_and(|r| r.status() == status) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/ready never {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fault injection: the data directory replaced under the running service. An address that
/// would change the sketch is refused with 503 and leaves the estimate as it was; once the
/// directory is back, the same address is taken and counted.
#[tokio::test]
async fn a_refused_write_leaves_the_sketch_as_it_was() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let mut flags = vec!["--fsync-interval=200ms"];
    flags.extend_from_slice(APPROX);
    let server = start(&dir, &flags).await;
    post_all(&server, &addresses(0, 5)).await;
    let before = stats(&server).await["unique_ip_addresses"].clone();
    assert_eq!(before, 5);

    let moved = parent.path().join("data.old");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::create_dir(&dir).unwrap();
    ready_becomes(&server, 503).await;
    let reply = server.post_ip("192.0.2.1").await;
    reply.assert_error(503, "storage_unavailable");
    assert_eq!(stats(&server).await["unique_ip_addresses"], before);

    std::fs::remove_dir(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    ready_becomes(&server, 200).await;
    let reply = server.post_ip("192.0.2.1").await;
    assert_eq!(reply.json()["message"], "New IP logged", "{}", reply.text);
    assert_eq!(stats(&server).await["unique_ip_addresses"], 6);
}
