//! `GET /metrics` on the metrics listener: content types, the gauge, the counters, the
//! histogram, the process metrics, and `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::helpers::{
    OPENMETRICS_ACCEPT, TestApp, metric_sum, metric_value, raw_http, require_tool, samples,
};

/// A series' labels other than `le`.
type Labels = Vec<(String, String)>;

/// The gauge's HELP with a data directory, as every [`TestApp`] has.
const GAUGE_HELP: &str = "# HELP unique_ip_addresses Total number of unique IP addresses seen since the data directory was created";

#[tokio::test]
async fn the_default_exposition_is_prometheus_text_0_0_4() {
    let app = TestApp::spawn().await;
    let reply = app.metrics().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        !reply.text.contains("# EOF"),
        "0.0.4 text has no # EOF line"
    );
    let lines: Vec<&str> = reply.text.lines().collect();
    assert!(lines.contains(&GAUGE_HELP), "{}", reply.text);
    assert!(
        lines.contains(&"# TYPE unique_ip_addresses gauge"),
        "{}",
        reply.text
    );
    assert!(lines.contains(&"unique_ip_addresses 0"), "{}", reply.text);

    let in_memory = TestApp::spawn_with(&["--persistence=off"]).await;
    let text = in_memory.metrics_text().await;
    assert!(
        text.lines().any(|l| l
            == "# HELP unique_ip_addresses Total number of unique IP addresses seen since service start"),
        "{text}"
    );

    let text_accept = app.metrics_with_accept("text/plain").await;
    assert_eq!(text_accept.status, 200);
    assert_eq!(
        text_accept.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
}

#[tokio::test]
async fn openmetrics_when_the_scraper_asks_for_it() {
    let app = TestApp::spawn().await;
    app.log_ip("192.0.2.50").await;
    for accept in [
        OPENMETRICS_ACCEPT,
        // What Prometheus itself sends.
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
         text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ] {
        let reply = app.metrics_with_accept(accept).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(
            reply
                .content_type()
                .starts_with("application/openmetrics-text"),
            "Accept {accept:?} got content-type {:?}",
            reply.content_type()
        );
        assert!(
            reply.text.ends_with("# EOF\n"),
            "OpenMetrics must end with # EOF: {:?}",
            reply.text
        );
        let lines: Vec<&str> = reply.text.lines().collect();
        assert!(
            lines.contains(&"# TYPE unique_ip_addresses gauge"),
            "{}",
            reply.text
        );
        assert_eq!(metric_value(&reply.text, "unique_ip_addresses"), 1.0);
        assert!(
            metric_sum(&reply.text, "ipcounter_log_entries_received_total", &[]) >= 1.0,
            "{}",
            reply.text
        );
    }
}

#[tokio::test]
async fn the_gauge_equals_stats_right_after_posting() {
    let app = TestApp::spawn().await;
    for (i, ip) in [
        "10.9.8.1",
        "10.9.8.2",
        "2001:db8::99",
        "10.9.8.1",
        "::ffff:10.9.8.2",
        "10.9.8.3",
    ]
    .iter()
    .enumerate()
    {
        app.log_ip(ip).await;
        let stats = app.unique_count().await;
        let text = app.metrics_text().await;
        let gauge = metric_value(&text, "unique_ip_addresses");
        assert_eq!(gauge, stats as f64, "after post {i} ({ip})");
    }
    assert_eq!(app.unique_count().await, 4);
    let text = app.metrics_text().await;
    assert!(text.lines().any(|l| l == "unique_ip_addresses 4"), "{text}");
}

#[tokio::test]
async fn received_and_rejected_counters_move() {
    let app = TestApp::spawn().await;
    let before = app.metrics_text().await;
    let received = |text: &str| metric_sum(text, "ipcounter_log_entries_received_total", &[]);
    assert!(
        before.contains("ipcounter_log_entries_received_total"),
        "the received counter should be exported from the start:\n{before}"
    );
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.1"] {
        app.log_ip(ip).await;
    }
    let after = app.metrics_text().await;
    assert_eq!(received(&after) - received(&before), 3.0, "{after}");

    let bad = [
        ("invalid_ip", json!({"ip": "999.1.1.1"}).to_string()),
        ("missing_ip", json!({"url": "/"}).to_string()),
        ("invalid_json", "{not json".to_string()),
        (
            "invalid_timestamp",
            json!({"ip": "203.0.113.3", "timestamp": "noon"}).to_string(),
        ),
    ];
    for (reason, body) in bad {
        let rejected = |text: &str| {
            metric_sum(
                text,
                "ipcounter_log_entries_rejected_total",
                &[("reason", reason)],
            )
        };
        let before = app.metrics_text().await;
        let reply = app.post_raw(Some("application/json"), body).await;
        reply.assert_error(400, reason);
        let after = app.metrics_text().await;
        assert_eq!(
            rejected(&after) - rejected(&before),
            1.0,
            "rejected{{reason=\"{reason}\"}} after one bad post:\n{after}"
        );
        let others: f64 = metric_sum(&after, "ipcounter_log_entries_rejected_total", &[])
            - metric_sum(&before, "ipcounter_log_entries_rejected_total", &[]);
        assert_eq!(
            others, 1.0,
            "one bad post moved more than one reason:\n{after}"
        );
    }
    assert_eq!(
        metric_value(&app.metrics_text().await, "unique_ip_addresses"),
        2.0
    );
}

#[tokio::test]
async fn http_requests_are_counted_by_route_and_status() {
    let app = TestApp::spawn().await;
    let requests = |text: &str, status: &str| {
        metric_sum(
            text,
            "ipcounter_http_requests_total",
            &[("route", "/logs"), ("status", status)],
        )
    };
    let before = app.metrics_text().await;
    for ip in ["198.18.0.1", "198.18.0.2", "198.18.0.1"] {
        app.log_ip(ip).await;
    }
    app.post_raw(Some("application/json"), "{")
        .await
        .assert_error(400, "invalid_json");
    let after = app.metrics_text().await;
    assert_eq!(
        requests(&after, "200") - requests(&before, "200"),
        3.0,
        "{after}"
    );
    assert_eq!(
        requests(&after, "400") - requests(&before, "400"),
        1.0,
        "{after}"
    );
    for s in samples(&after)
        .iter()
        .filter(|s| s.name == "ipcounter_http_requests_total")
    {
        assert!(
            s.label("route").is_some() && s.label("status").is_some(),
            "every request series has route and status labels: {s:?}"
        );
    }
}

#[tokio::test]
async fn requests_refused_before_routing_are_counted_by_status() {
    let app = TestApp::spawn().await;
    let refused = |text: &str, status: &str| {
        metric_sum(
            text,
            "ipcounter_http_requests_total",
            &[("route", "unparsed"), ("status", status)],
        )
    };
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let large_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
            .repeat(10_000)
    );
    let cases: [(&[u8], u16); 4] = [
        (b"NOT AN HTTP REQUEST\r\n\r\n", 400),
        (b"POST /logs HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (long_uri.as_bytes(), 414),
        (large_head.as_bytes(), 431),
    ];
    for (request, status) in cases {
        let before = app.metrics_text().await;
        let reply = raw_http(app.ingest, request).await;
        assert_eq!(reply.status, status, "{}", reply.text);
        let after = app.metrics_text().await;
        let s = status.to_string();
        assert_eq!(
            refused(&after, &s) - refused(&before, &s),
            1.0,
            "a {status} refusal is counted once:\n{after}"
        );
    }
    assert_eq!(app.unique_count().await, 0);
}

#[tokio::test]
async fn new_addresses_and_the_build_are_exported() {
    let app = TestApp::spawn().await;
    for ip in ["198.18.2.1", "198.18.2.2", "198.18.2.1"] {
        app.log_ip(ip).await;
    }
    app.post_raw(
        Some("application/x-ndjson"),
        "{\"ip\":\"198.18.2.2\"}\n{\"ip\":\"198.18.2.3\"}\n{\"ip\":\"nope\"}\n",
    )
    .await;
    let text = app.metrics_text().await;
    assert_eq!(metric_value(&text, "ipcounter_new_addresses_total"), 3.0);
    assert_eq!(
        metric_sum(
            &text,
            "ipcounter_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn duration_buckets_at_most_double_from_100us_to_1s() {
    let app = TestApp::spawn().await;
    app.log_ip("198.18.3.1").await;
    let text = app.metrics_text().await;
    let mut bounds: Vec<f64> = samples(&text)
        .iter()
        .filter(|s| {
            s.name == "ipcounter_http_request_duration_seconds_bucket"
                && s.has(&[("route", "/logs")])
        })
        .map(|s| s.label("le").unwrap().parse().unwrap())
        .collect();
    bounds.sort_by(f64::total_cmp);
    let lo = bounds
        .iter()
        .rposition(|&b| b <= 0.0001)
        .expect("a bucket at or below 100µs");
    let hi = bounds
        .iter()
        .position(|&b| b >= 1.0)
        .expect("a bucket at or above 1 s");
    for pair in bounds[lo..=hi].windows(2) {
        assert!(
            pair[1] <= 2.0 * pair[0] * (1.0 + 1e-9),
            "{} follows {}: {bounds:?}",
            pair[1],
            pair[0]
        );
    }
}

#[tokio::test]
async fn request_durations_are_a_histogram() {
    let app = TestApp::spawn().await;
    for ip in ["198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4"] {
        app.log_ip(ip).await;
    }
    let text = app.metrics_text().await;
    assert!(
        text.lines()
            .any(|l| l == "# TYPE ipcounter_http_request_duration_seconds histogram"),
        "{text}"
    );
    let all = samples(&text);
    let name = "ipcounter_http_request_duration_seconds";
    let series_key = |s: &crate::helpers::Sample| -> Labels {
        s.labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect()
    };

    // Group buckets by their series (all labels but `le`).
    let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for s in all.iter().filter(|s| s.name == format!("{name}_bucket")) {
        let le: f64 = s
            .label("le")
            .unwrap_or_else(|| panic!("bucket without le: {s:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("le is not a number: {s:?}"));
        buckets
            .entry(series_key(s))
            .or_default()
            .push((le, s.value));
    }
    let logs: Vec<_> = buckets
        .keys()
        .filter(|k| k.iter().any(|(k, v)| k == "route" && v == "/logs"))
        .cloned()
        .collect();
    assert!(
        !logs.is_empty(),
        "no duration buckets for route=\"/logs\":\n{text}"
    );

    let mut logs_count = 0.0;
    for (key, mut bs) in buckets {
        bs.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(bs.len() >= 2, "{key:?}: too few buckets {bs:?}");
        assert!(
            bs.windows(2).all(|w| w[0].1 <= w[1].1),
            "{key:?}: buckets not cumulative {bs:?}"
        );
        let (last_le, inf) = *bs.last().unwrap();
        assert!(last_le.is_infinite(), "{key:?}: no le=\"+Inf\" bucket");
        let labels: Vec<(&str, &str)> = key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let count = all
            .iter()
            .find(|s| {
                s.name == format!("{name}_count")
                    && s.labels.len() == labels.len()
                    && s.has(&labels)
            })
            .unwrap_or_else(|| panic!("{key:?}: no _count"))
            .value;
        assert_eq!(inf, count, "{key:?}: +Inf bucket differs from _count");
        let sum = all
            .iter()
            .find(|s| {
                s.name == format!("{name}_sum") && s.labels.len() == labels.len() && s.has(&labels)
            })
            .unwrap_or_else(|| panic!("{key:?}: no _sum"))
            .value;
        assert!(
            sum >= 0.0 && sum < count * 10.0,
            "{key:?}: implausible _sum {sum} for {count} requests"
        );
        if logs.contains(&key) {
            logs_count += count;
        }
    }
    assert_eq!(
        logs_count, 4.0,
        "four POST /logs should be observed:\n{text}"
    );
}

#[tokio::test]
async fn standard_process_metrics_are_exported() {
    let app = TestApp::spawn().await;
    let text = app.metrics_text().await;
    let rss = metric_value(&text, "process_resident_memory_bytes");
    assert!(rss > 1_000_000.0, "resident memory {rss}");
    let cpu = metric_value(&text, "process_cpu_seconds_total");
    assert!(cpu >= 0.0, "cpu {cpu}");
    let start = metric_value(&text, "process_start_time_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // This test process started it (or started shortly before): within the last hour.
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "start time {start}, now {now}"
    );
}

#[tokio::test]
async fn the_metrics_listener_answers_health() {
    let app = TestApp::spawn().await;
    let reply = app.metrics_health().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.content_type().starts_with("application/json"),
        "{}",
        reply.content_type()
    );
    assert_eq!(reply.json()["status"], "healthy");

    let reply = app
        .send(app.client.get(app.metrics_url("/no-such-path")))
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    let reply = app
        .send(app.client.post(app.metrics_url("/logs")).body("{}"))
        .await;
    assert!(
        reply.status == 404 || reply.status == 405,
        "the metrics listener must not ingest: {} {}",
        reply.status,
        reply.text
    );
}

#[tokio::test]
async fn promtool_check_metrics_passes() {
    let promtool = require_tool("promtool");
    let app = TestApp::spawn().await;
    // Traffic of every kind, so that labelled series exist.
    app.log_ip("192.0.2.77").await;
    app.log_ip("2001:db8::77").await;
    app.post_raw(Some("application/json"), json!({"ip": "x"}).to_string())
        .await;
    app.post_raw(Some("text/html"), "<p>").await;
    app.ingest_request(reqwest::Method::GET, "/nope").await;
    app.health().await;
    let text = app.metrics_text().await;

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("running promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- exposition ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `deploy/prometheus.yml` and its alerting rules pass promtool (the rules' own unit tests in
/// `deploy/alerts_test.yml` included), and every metric the rules read is one the service
/// exports.
#[tokio::test]
async fn the_deployed_alert_rules_pass_promtool_and_read_exported_metrics() {
    let promtool = require_tool("promtool");
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for args in [
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&deploy)
            .output()
            .expect("running promtool");
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(deploy.join("alerts.yml")).unwrap();
    let app = TestApp::spawn().await;
    let text = app.metrics_text().await;
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let used: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .flat_map(|expr| expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| word.starts_with("ipcounter_") || word.starts_with("unique_ip"))
        .collect();
    assert!(used.len() >= 4, "{used:?}");
    for name in used {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            exported.contains(name) || exported.contains(family),
            "alerts.yml reads {name}, which /metrics does not export"
        );
    }
}
