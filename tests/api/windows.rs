//! Time windows through HTTP (`WINDOWS`, `MAX_CLOCK_SKEW`): entries' own times, late, future
//! and repeated entries, every body type, `/stats` and `/metrics`. Event times are set relative
//! to the real clock; nothing here waits for time to pass (the counting is tested against a
//! model under a synthetic clock in `counter::windows` and `counter::exact`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::helpers::{TestApp, metric_sum, metric_value};

/// RFC 3339 for `seconds` before now (negative: ahead).
fn ago(seconds: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let then = UNIX_EPOCH + Duration::from_secs((now - seconds) as u64);
    humantime::format_rfc3339_seconds(then).to_string()
}

/// An access-log line's time field, `[02/Dec/2026:15:40:00 +0000]`, for `seconds` before now.
fn clf_time(seconds: i64) -> String {
    let rfc = ago(seconds); // 2026-12-02T15:40:00Z
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][rfc[5..7].parse::<usize>().unwrap() - 1];
    format!(
        "[{}/{month}/{}:{} +0000]",
        &rfc[8..10],
        &rfc[..4],
        &rfc[11..19]
    )
}

fn entry(ip: &str, seconds_ago: i64) -> Value {
    json!({"timestamp": ago(seconds_ago), "ip": ip, "url": "/"})
}

async fn windows(app: &TestApp) -> Value {
    app.stats_json().await["windows"].clone()
}

const HOUR: i64 = 3600;

#[tokio::test]
async fn each_entry_counts_in_the_windows_its_own_time_falls_in() {
    let app = TestApp::spawn_with(&["--persistence=off"]).await;
    assert_eq!(windows(&app).await, json!({"5m": 0, "1h": 0, "24h": 0}));
    for (ip, seconds_ago) in [
        ("192.0.2.1", 10),
        ("192.0.2.2", 20 * 60),
        ("2001:db8::3", 5 * HOUR),
        ("192.0.2.4", 30 * HOUR),
    ] {
        let reply = app.post_log(&entry(ip, seconds_ago)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    // No timestamp: its arrival, now.
    let reply = app.post_log(&json!({"ip": "192.0.2.5"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let stats = app.stats_json().await;
    assert_eq!(stats["unique_ip_addresses"], 5, "{stats}");
    assert_eq!(
        stats["windows"],
        json!({"5m": 2, "1h": 3, "24h": 4}),
        "{stats}"
    );

    let text = app.metrics_text().await;
    for (window, n) in [("5m", 2.0), ("1h", 3.0), ("24h", 4.0)] {
        let got = metric_sum(&text, "unique_ip_addresses_window", &[("window", window)]);
        assert_eq!(got, n, "{window} in:\n{text}");
    }
    assert_eq!(metric_value(&text, "unique_ip_addresses"), 5.0);
}

#[tokio::test]
async fn a_later_sighting_moves_an_address_in_and_an_earlier_one_never_moves_it_back() {
    let app = TestApp::spawn_with(&["--persistence=off"]).await;
    app.post_log(&entry("192.0.2.10", 2 * HOUR)).await;
    assert_eq!(windows(&app).await, json!({"5m": 0, "1h": 0, "24h": 1}));
    let reply = app.post_log(&entry("192.0.2.10", 60)).await;
    assert_eq!(reply.json()["message"], "IP already seen");
    assert_eq!(windows(&app).await, json!({"5m": 1, "1h": 1, "24h": 1}));
    app.post_log(&entry("192.0.2.10", 10 * HOUR)).await;
    assert_eq!(windows(&app).await, json!({"5m": 1, "1h": 1, "24h": 1}));
    assert_eq!(app.unique_count().await, 1);
}

#[tokio::test]
async fn an_entry_too_far_ahead_counts_at_arrival_and_in_the_skew_counter() {
    let app = TestApp::spawn_with(&["--persistence=off", "--max-clock-skew=1m"]).await;
    // Within the skew: its own time, not yet in any window.
    app.post_log(&entry("192.0.2.20", -30)).await;
    // Beyond: now.
    app.post_log(&entry("192.0.2.21", -2 * HOUR)).await;
    let stats = app.stats_json().await;
    assert_eq!(stats["unique_ip_addresses"], 2);
    assert_eq!(stats["windows"]["5m"], 1, "{stats}");
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(&text, "ipcounter_clock_skew_entries_total"),
        1.0
    );
}

/// NDJSON and JSON arrays carry each entry's time, access-log lines the time in their brackets;
/// a line without one counts at arrival.
#[tokio::test]
async fn batches_of_every_body_type_carry_their_times() {
    let app = TestApp::spawn_with(&["--persistence=off"]).await;
    let ndjson: String = [entry("192.0.2.30", 30), entry("192.0.2.31", 2 * HOUR)]
        .iter()
        .map(|e| format!("{e}\n"))
        .collect();
    let reply = app.post_raw(Some("application/x-ndjson"), ndjson).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let array = json!([entry("192.0.2.32", 30 * HOUR), entry("192.0.2.30", 10)]);
    let reply = app
        .post_raw(Some("application/json"), array.to_string())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let text = format!(
        "192.0.2.33 - - {} \"GET / HTTP/1.1\" 200 1\n192.0.2.34 - - {} \"GET /\" 200 1\n192.0.2.35\n",
        clf_time(20 * 60),
        clf_time(3 * HOUR)
    );
    let reply = app.post_raw(Some("text/plain"), text).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let stats = app.stats_json().await;
    assert_eq!(stats["unique_ip_addresses"], 6);
    // .30 (10 s) and .35 (arrival) | .33 (20 min) | .31 (2 h), .34 (3 h) | .32 (30 h): total only.
    let expected = json!({"5m": 2, "1h": 3, "24h": 5});
    assert_eq!(stats["windows"], expected, "{stats}");
}

#[tokio::test]
async fn windows_can_be_chosen_or_turned_off() {
    let app = TestApp::spawn_with(&["--persistence=off", "--windows=2h,10m"]).await;
    app.post_log(&entry("192.0.2.40", 30 * 60)).await;
    assert_eq!(windows(&app).await, json!({"10m": 0, "2h": 1}));

    let off = TestApp::spawn_with(&["--persistence=off", "--windows="]).await;
    off.post_log(&entry("192.0.2.41", 10)).await;
    assert_eq!(windows(&off).await, json!({}));
    let text = off.metrics_text().await;
    assert!(!text.contains("unique_ip_addresses_window"), "{text}");
    assert_eq!(off.unique_count().await, 1);
}

#[test]
fn bad_windows_stop_the_start_naming_the_setting() {
    let quick = Duration::from_secs(10);
    for (value, why) in [
        ("30s", "shorter than 1m"),
        ("5m,5m", "twice"),
        ("1m,100d", "steps"),
        ("soon", "WINDOWS"),
    ] {
        let run = crate::helpers::run_to_exit(&[&format!("--windows={value}")], &[], quick);
        assert_eq!(run.status.code(), Some(2), "{value}: {run:?}");
        assert!(
            run.stderr.contains("WINDOWS") && run.stderr.contains(why),
            "{value}: {}",
            run.stderr
        );
    }
}

/// The windows survive a restart and a kill -9 like the total: each address's latest time is
/// in the log (a new address, or one seen at a later step) and in the snapshot.
#[tokio::test]
async fn windows_survive_a_restart_and_a_kill_9() {
    survive_a_restart_and_a_kill_9(&[]).await;
}

/// The same with sketches: a handful of addresses is counted exactly by them.
#[tokio::test]
async fn approx_windows_survive_a_restart_and_a_kill_9() {
    survive_a_restart_and_a_kill_9(&["--count-mode=approx"]).await;
}

async fn survive_a_restart_and_a_kill_9(flags: &[&str]) {
    use crate::helpers::ServerProcess;
    use crate::persistence::start;

    async fn post(server: &ServerProcess, entries: &[Value]) {
        let body: String = entries.iter().map(|e| format!("{e}\n")).collect();
        let reply = server
            .client
            .post(server.ingest_url("/logs"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    async fn stats(server: &ServerProcess) -> Value {
        let url = server.ingest_url("/stats");
        server
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path(), flags).await;
    post(
        &server,
        &[entry("192.0.2.50", 30), entry("2001:db8::51", 2 * HOUR)],
    )
    .await;
    post(&server, &[entry("192.0.2.52", 30 * HOUR)]).await;
    // Seen again later: moved into the 5m window, which only its log record can tell.
    post(&server, &[entry("2001:db8::51", 60)]).await;
    let before = stats(&server).await;
    assert_eq!(
        before["windows"],
        json!({"5m": 2, "1h": 2, "24h": 2}),
        "{before}"
    );
    server.kill_9();

    let server = start(data.path(), flags).await;
    let after = stats(&server).await;
    assert_eq!(after["unique_ip_addresses"], 3, "{after}");
    assert_eq!(
        after["windows"], before["windows"],
        "after kill -9: {after}"
    );
    // A clean stop writes no snapshot; the start-up snapshot folded the logs: restart once more.
    server.signal("TERM");
    let mut server = server;
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    let server = start(data.path(), flags).await;
    let again = stats(&server).await;
    assert_eq!(
        again["windows"], before["windows"],
        "after a snapshot: {again}"
    );
}
