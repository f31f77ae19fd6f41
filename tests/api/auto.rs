//! `COUNT_MODE=auto` against the real binary: exact until `MEMORY_BUDGET`, then the sketch,
//! with no count going down across the switch, and the sketch kept across kill -9 so that
//! re-posting every acknowledged address changes nothing; a switch whose snapshot cannot be
//! written is undone, counting stays exact, and it is made once the disk takes it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{Reply, ServerProcess, metric_sum};
use crate::persistence::{start, verify};

/// The exact kind's fixed structures take about 4.1 MiB: a budget a little above them is
/// reached after some tens of thousands of addresses spread over the IPv4 space.
const AUTO: &[&str] = &["--count-mode=auto", "--memory-budget=4500KiB"];

/// `n` addresses from `from` on, spread over the whole IPv4 space.
fn spread(from: u32, n: u32) -> Vec<String> {
    (from..from + n)
        .map(|i| Ipv4Addr::from_bits(i.wrapping_mul(2_654_435_761)).to_string())
        .collect()
}

async fn stats(server: &ServerProcess) -> Value {
    let reply = server.client.get(server.ingest_url("/stats")).send().await;
    let reply = Reply::read(reply.expect("GET /stats")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

/// Posts `ips` as one batch; its `new_ips`.
async fn post(server: &ServerProcess, ips: &[String]) -> u64 {
    let reply = server.post_batch(ips).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["new_ips"].as_u64().unwrap()
}

/// Polls `/stats` until its mode is `mode`, asserting meanwhile that the count never goes
/// below `floor` nor down; the last count.
async fn mode_becomes(server: &ServerProcess, mode: &str, mut floor: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let now = stats(server).await;
        let count = now["unique_ip_addresses"].as_u64().unwrap();
        assert!(count >= floor, "went down from {floor}: {now}");
        floor = count;
        if now["mode"] == mode {
            return count;
        }
        assert!(Instant::now() < deadline, "never {mode}: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn it_switches_to_the_sketch_without_a_drop_and_keeps_it_across_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path(), AUTO).await;
    assert_eq!(stats(&server).await["mode"], "exact");
    let (mut posted, mut last) = (0, 0);
    loop {
        post(&server, &spread(posted, 5_000)).await;
        posted += 5_000;
        let now = stats(&server).await;
        let count = now["unique_ip_addresses"].as_u64().unwrap();
        assert!(count >= last, "{count} after {last}");
        last = count;
        if now["mode"] != "exact" {
            break;
        }
        // Still exact after the post, so the post was counted exactly: every address.
        assert_eq!(count, u64::from(posted), "{now}");
        assert!(posted < 1_000_000, "no switch after {posted} addresses");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From the switch on, the count is the estimate, never below the exact count it started from.
    for _ in 0..10 {
        let count = post(&server, &spread(posted, 5_000)).await;
        posted += 5_000;
        let now = stats(&server).await;
        let total = now["unique_ip_addresses"].as_u64().unwrap();
        assert!(total >= last, "went down from {last}: {now} ({count} new)");
        last = total;
    }
    let before = stats(&server).await;
    let rse = before["relative_standard_error"].as_f64().unwrap();
    let error = (last as f64 / f64::from(posted) - 1.0).abs();
    assert!(error < 3.0 * rse, "{last} for {posted}: {before}");
    let metrics = server.metrics_text().await;
    assert_eq!(
        metric_sum(&metrics, "ipcounter_count_mode", &[("mode", "approx")]),
        1.0
    );
    assert!(
        metric_sum(&metrics, "ipcounter_store_memory_bytes", &[]) < 4_000_000.0,
        "the exact set was not let go"
    );

    server.kill_9();
    let server = start(data.path(), AUTO).await;
    let after = stats(&server).await;
    assert_eq!(after["mode"], "approx", "{after}");
    assert_eq!(after["unique_ip_addresses"], last, "{after}");
    let mut new = 0;
    for from in (0..posted).step_by(5_000) {
        new += post(&server, &spread(from, 5_000)).await;
    }
    assert_eq!(
        new, 0,
        "re-posting what was acknowledged changed the sketch"
    );
    assert_eq!(stats(&server).await["unique_ip_addresses"], last);
    drop(server);
    let report = verify(data.path());
    assert!(report.status.success(), "{report:?}");
    assert!(
        report.stdout.contains("estimate: about"),
        "{}",
        report.stdout
    );
}

/// Fault injection: the sketch's snapshot cannot be written (its temporary file's name is
/// taken by a directory). The switch is undone: counting stays exact and every batch is
/// acknowledged; once the name is free, the switch is made.
#[tokio::test]
async fn a_switch_whose_snapshot_fails_is_undone_and_made_later() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), AUTO).await;
    let blocker = data.path().join("snapshot.bin.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let mut posted = 0;
    loop {
        post(&server, &spread(posted, 5_000)).await;
        posted += 5_000;
        let metrics = server.metrics_text().await;
        let memory = metric_sum(&metrics, "ipcounter_store_memory_bytes", &[]);
        if memory >= metric_sum(&metrics, "ipcounter_memory_budget_bytes", &[]) {
            break;
        }
        assert!(posted < 1_000_000, "the budget was never reached");
    }
    // Past the budget for several checks (ten a second): still exact, still counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(post(&server, &spread(posted, 5_000)).await, 5_000);
    posted += 5_000;
    let now = stats(&server).await;
    assert_eq!(now["mode"], "exact", "{now}");
    assert_eq!(now["unique_ip_addresses"], posted, "{now}");

    std::fs::remove_dir(&blocker).unwrap();
    mode_becomes(
        &server,
        "approx",
        u64::from(posted),
        Duration::from_secs(10),
    )
    .await;
}
