//! `GET /health`, `/ready` and `/stats` on the ingest listener.

use std::time::Duration;

use serde_json::json;

use crate::helpers::TestApp;

/// The keys of a JSON object, sorted.
fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn health_reports_status_count_uptime_and_version() {
    let app = TestApp::spawn().await;
    for ip in ["192.0.2.1", "192.0.2.2", "2001:db8::2", "192.0.2.1"] {
        app.log_ip(ip).await;
    }
    let reply = app.health().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.content_type().starts_with("application/json"),
        "{}",
        reply.content_type()
    );
    let body = reply.json();
    assert_eq!(
        keys(&body),
        ["status", "unique_ip_count", "uptime", "version"],
        "{body}"
    );
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["unique_ip_count"], 3);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["version"], "0.1.0");
    let uptime = body["uptime"]
        .as_str()
        .unwrap_or_else(|| panic!("uptime is not text: {body}"));
    let secs = uptime
        .strip_suffix('s')
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("uptime should read like \"3600s\", got {uptime:?}"));
    assert!(secs < 60, "a fresh service reports {uptime}");
}

#[tokio::test]
async fn ready_while_serving() {
    let app = TestApp::spawn().await;
    let reply = app.ready().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.content_type().starts_with("application/json"),
        "{}",
        reply.content_type()
    );
    assert_eq!(reply.json(), json!({"status": "ready"}));
}

#[tokio::test]
async fn stats_counts_each_family_and_their_sum() {
    let app = TestApp::spawn().await;
    let empty = app.stats_json().await;
    for key in [
        "unique_ip_addresses",
        "unique_ipv4",
        "unique_ipv6",
        "estimated_memory_usage_bytes",
        "uptime_seconds",
    ] {
        assert!(
            empty[key].is_number(),
            "{key} missing or not a number: {empty}"
        );
    }
    assert_eq!(empty["unique_ip_addresses"], 0, "{empty}");
    assert_eq!(empty["unique_ipv4"], 0, "{empty}");
    assert_eq!(empty["unique_ipv6"], 0, "{empty}");

    for ip in [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "::ffff:198.51.100.3",
        "2001:db8::a",
        "2001:db8::b",
        "2001:DB8::A",
    ] {
        app.log_ip(ip).await;
    }
    let stats = app.stats_json().await;
    assert_eq!(stats["unique_ipv4"], 3, "{stats}");
    assert_eq!(stats["unique_ipv6"], 2, "{stats}");
    assert_eq!(stats["unique_ip_addresses"], 5, "{stats}");
    let health = app.health().await.json();
    assert_eq!(
        health["unique_ip_count"], 5,
        "/health and /stats disagree: {health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimated_memory_is_positive_and_grows_with_addresses() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let at_start = app.stats_json().await["estimated_memory_usage_bytes"]
        .as_u64()
        .expect("estimated_memory_usage_bytes is a count of bytes");
    assert!(at_start > 0, "memory at start: {at_start}");

    const TASKS: u32 = 16;
    const EACH: u32 = 625;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..EACH {
                let n = t * EACH + k;
                let ip = if n.is_multiple_of(4) {
                    format!("2001:db8:{:x}::{:x}", n >> 16, n & 0xffff)
                } else {
                    std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string()
                };
                app.log_ip(&ip).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task panicked");
    }
    let stats = app.stats_json().await;
    assert_eq!(
        stats["unique_ip_addresses"],
        u64::from(TASKS * EACH),
        "{stats}"
    );
    assert_eq!(stats["unique_ipv6"], u64::from(TASKS * EACH / 4), "{stats}");
    let after = stats["estimated_memory_usage_bytes"].as_u64().unwrap();
    assert!(
        after > at_start,
        "memory did not grow after 10000 addresses: {at_start} -> {after}"
    );
}

#[tokio::test]
async fn uptime_moves_with_the_clock() {
    let app = TestApp::spawn().await;
    let before = app.stats_json().await["uptime_seconds"]
        .as_f64()
        .expect("uptime_seconds");
    assert!((0.0..60.0).contains(&before), "fresh uptime {before}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = app.stats_json().await["uptime_seconds"].as_f64().unwrap();
    assert!(
        after >= 1.0 && after > before,
        "uptime {before} -> {after} after 1.1s"
    );
    let health = app.health().await.json();
    let secs: u64 = health["uptime"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(secs >= 1, "health uptime after 1.1s: {health}");
}
