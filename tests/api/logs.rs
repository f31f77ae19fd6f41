//! `POST /logs`: the reply shapes, every error code, and what counts as one address.

use std::net::{IpAddr, Ipv6Addr};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, raw_http};

#[tokio::test]
async fn a_new_address_then_the_same_again() {
    let app = TestApp::spawn().await;

    let first = app
        .post_log(&json!({"timestamp": "2024-01-01T00:00:00Z", "ip": "83.150.59.250", "url": "/a"}))
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(
        first.content_type().starts_with("application/json"),
        "{}",
        first.content_type()
    );
    assert_eq!(
        first.json(),
        json!({"status": "success", "message": "New IP logged", "unique_ips": 1})
    );

    let again = app
        .post_log(&json!({"timestamp": "2024-01-01T00:00:01Z", "ip": "83.150.59.250", "url": "/b"}))
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(
        again.json(),
        json!({"status": "success", "message": "IP already seen", "unique_ips": 1})
    );
    assert_eq!(app.unique_count().await, 1);
}

#[tokio::test]
async fn unique_ips_counts_up_with_each_new_address() {
    let app = TestApp::spawn().await;
    for (i, ip) in ["10.0.0.1", "10.0.0.2", "::1", "10.0.0.3"]
        .iter()
        .enumerate()
    {
        let body = app.log_ip(ip).await;
        assert_eq!(body["message"], "New IP logged", "{ip}: {body}");
        assert_eq!(body["unique_ips"], i as u64 + 1, "{ip}: {body}");
    }
    let body = app.log_ip("10.0.0.2").await;
    assert_eq!(body["message"], "IP already seen", "{body}");
    assert_eq!(body["unique_ips"], 4, "{body}");
}

#[tokio::test]
async fn content_type_parameters_are_ignored() {
    let app = TestApp::spawn().await;
    for (ct, ip) in [
        ("application/json; charset=utf-8", "1.1.1.1"),
        ("application/json;charset=UTF-8", "1.1.1.2"),
    ] {
        let reply = app
            .post_raw(Some(ct), json!({ "ip": ip }).to_string())
            .await;
        assert_eq!(reply.status, 200, "{ct}: {}", reply.text);
        assert_eq!(reply.json()["message"], "New IP logged", "{ct}");
    }
    assert_eq!(app.unique_count().await, 2);
}

#[tokio::test]
async fn only_ip_is_required_and_unknown_fields_are_ignored() {
    let app = TestApp::spawn().await;
    let accepted = [
        json!({"ip": "192.0.2.1"}),
        json!({"ip": "192.0.2.2", "timestamp": null}),
        json!({"ip": "192.0.2.3", "url": "/x?y=1"}),
        json!({"ip": "192.0.2.4", "timestamp": "2020-06-24T15:27:00.123456Z"}),
        json!({"ip": "192.0.2.5", "timestamp": "2020-06-24T17:27:00+02:00"}),
        json!({"ip": "192.0.2.6", "user_agent": "curl/8", "extra": {"nested": [1, 2, 3]}, "n": 7}),
        json!({"url": "/first", "ip": "192.0.2.7", "timestamp": "2024-02-29T23:59:59Z"}),
    ];
    for (i, entry) in accepted.iter().enumerate() {
        let reply = app.post_log(entry).await;
        assert_eq!(reply.status, 200, "{entry}: {}", reply.text);
        assert_eq!(
            reply.json(),
            json!({"status": "success", "message": "New IP logged", "unique_ips": i + 1}),
            "{entry}"
        );
    }
}

/// Posts each body, expects the error, and checks that the count did not move.
async fn expect_errors(app: &TestApp, cases: &[(Option<&str>, String)], status: u16, code: &str) {
    let before = app.unique_count().await;
    for (ct, body) in cases {
        let reply = app.post_raw(*ct, body.clone()).await;
        assert_eq!(
            reply.status, status,
            "content-type {ct:?}, body {body:?}: got {} {}",
            reply.status, reply.text
        );
        reply.assert_error(status, code);
    }
    assert_eq!(
        app.unique_count().await,
        before,
        "a {code} request changed the count"
    );
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn bodies_that_are_not_one_json_object_are_invalid_json() {
    let app = TestApp::spawn().await;
    app.log_ip("203.0.113.1").await;
    let cases: Vec<_> = [
        "not json",
        "",
        "{\"ip\": \"1.2.3.4\"",
        "{\"ip\": \"1.2.3.4\"} trailing",
        "{\"ip\": \"1.2.3.4\"}{\"ip\": \"1.2.3.5\"}",
        "\"1.2.3.4\"",
        "42",
        "null",
        "{'ip': '1.2.3.4'}",
    ]
    .into_iter()
    .map(|b| (JSON, b.to_string()))
    .collect();
    expect_errors(&app, &cases, 400, "invalid_json").await;
    assert_eq!(app.unique_count().await, 1);
}

#[tokio::test]
async fn an_absent_or_null_ip_is_missing_ip() {
    let app = TestApp::spawn().await;
    let cases: Vec<_> = [
        json!({}),
        json!({"ip": null}),
        json!({"timestamp": "2024-01-01T00:00:00Z", "url": "/a"}),
        json!({"IP": "1.2.3.4"}),
    ]
    .iter()
    .map(|b| (JSON, b.to_string()))
    .collect();
    expect_errors(&app, &cases, 400, "missing_ip").await;
    assert_eq!(app.unique_count().await, 0);
}

#[tokio::test]
async fn malformed_addresses_are_invalid_ip() {
    let app = TestApp::spawn().await;
    app.log_ip("1.2.3.4").await;
    let bad: Vec<Value> = vec![
        json!(" 1.2.3.4"),
        json!("1.2.3.4 "),
        json!("1.2.3.4\n"),
        json!("1.2.3.4:80"),
        json!("[::1]"),
        json!("[2001:db8::1]:443"),
        json!("fe80::1%eth0"),
        json!("10.0.0.0/8"),
        json!("2001:db8::/32"),
        json!("example.com"),
        json!("localhost"),
        json!("01.2.3.4"),
        json!("1.2.3.04"),
        json!("256.1.1.1"),
        json!("1.2.3"),
        json!("1.2.3.4.5"),
        json!("2001:db8:::1"),
        json!("1:2:3:4:5:6:7:8:9"),
        json!("::ffff:1.2.3.256"),
        json!(123),
        json!(16909060),
        json!(true),
        json!({"v4": "1.2.3.4"}),
    ];
    let cases: Vec<_> = bad
        .iter()
        .map(|ip| (JSON, json!({ "ip": ip }).to_string()))
        .collect();
    expect_errors(&app, &cases, 400, "invalid_ip").await;
    assert_eq!(app.unique_count().await, 1);
}

#[tokio::test]
async fn a_timestamp_that_is_not_rfc3339_is_invalid_timestamp() {
    let app = TestApp::spawn().await;
    let bad = [
        json!("yesterday"),
        json!("2024-01-01"),
        json!("2024-01-01 00:00:00"),
        json!("2024-13-01T00:00:00Z"),
        json!("2024-01-32T00:00:00Z"),
        json!("2024-01-01T25:00:00Z"),
        json!("2024-01-01T00:00:00"),
        json!("01/01/2024"),
        json!(""),
        json!(1704067200),
    ];
    let cases: Vec<_> = bad
        .iter()
        .map(|ts| {
            (
                JSON,
                json!({"ip": "198.51.100.7", "timestamp": ts}).to_string(),
            )
        })
        .collect();
    expect_errors(&app, &cases, 400, "invalid_timestamp").await;
    assert_eq!(app.unique_count().await, 0);
}

#[tokio::test]
async fn other_content_types_are_unsupported_media_type() {
    let app = TestApp::spawn().await;
    let body = json!({"ip": "198.51.100.8"}).to_string();
    let cases: Vec<_> = [
        None,
        Some("text/html"),
        Some("application/xml"),
        Some("application/x-www-form-urlencoded"),
        Some("image/png"),
    ]
    .into_iter()
    .map(|ct| (ct, body.clone()))
    .collect();
    expect_errors(&app, &cases, 415, "unsupported_media_type").await;
    assert_eq!(app.unique_count().await, 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_body_too_large() {
    let app = TestApp::spawn_with(&["--max-body-bytes=1KiB"]).await;

    let small = json!({"ip": "198.51.100.9", "pad": "x".repeat(900)}).to_string();
    assert!(small.len() < 1024);
    let reply = app.post_raw(JSON, small).await;
    assert_eq!(reply.status, 200, "a body under the limit: {}", reply.text);

    let big = json!({"ip": "198.51.100.10", "pad": "x".repeat(2000)}).to_string();
    expect_errors(&app, &[(JSON, big)], 413, "body_too_large").await;
    let huge = json!({"ip": "198.51.100.11", "pad": "x".repeat(1 << 20)}).to_string();
    expect_errors(&app, &[(JSON, huge)], 413, "body_too_large").await;
    assert_eq!(app.unique_count().await, 1);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_arrives() {
    let app = TestApp::spawn_with(&["--max-body-bytes=1KiB"]).await;
    // No body follows the head: a server that waited for it would time the test out.
    let request = format!(
        "POST /logs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000000000\r\nConnection: close\r\n\r\n",
        app.ingest
    );
    let reply = raw_http(app.ingest, request.as_bytes()).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert!(reply.text.contains("body_too_large"), "{}", reply.text);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_body_too_large() {
    let app = TestApp::spawn_with(&["--max-body-bytes=1KiB"]).await;
    let entry = json!({"ip": "198.51.100.12", "pad": "y".repeat(3000)}).to_string();
    let mut request = format!(
        "POST /logs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.ingest
    );
    for chunk in entry.as_bytes().chunks(500) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    request.push_str("0\r\n\r\n");
    let reply = raw_http(app.ingest, request.as_bytes()).await;
    assert_eq!(reply.status, 413, "{}", reply.text);
    assert!(reply.text.contains("body_too_large"), "{}", reply.text);
    assert_eq!(app.unique_count().await, 0);

    let small = json!({"ip": "198.51.100.13"}).to_string();
    let request = format!(
        "POST /logs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{small}\r\n0\r\n\r\n",
        app.ingest,
        small.len()
    );
    let reply = raw_http(app.ingest, request.as_bytes()).await;
    assert_eq!(reply.status, 200, "a small chunked body: {}", reply.text);
    assert_eq!(app.unique_count().await, 1);
}

#[tokio::test]
async fn other_methods_on_logs_are_method_not_allowed() {
    let app = TestApp::spawn().await;
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let reply = app.ingest_request(method.clone(), "/logs").await;
        reply.assert_error(405, "method_not_allowed");
        let allow = reply.header("allow");
        assert!(
            allow.split(',').any(|m| m.trim() == "POST"),
            "{method}: Allow should list POST, got {allow:?}"
        );
    }
    assert_eq!(app.unique_count().await, 0);
}

#[tokio::test]
async fn unknown_paths_are_not_found() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::POST, "/log"),
        (Method::POST, "/logs/extra"),
        (Method::GET, "/metrics"),
    ] {
        let reply = app.ingest_request(method.clone(), path).await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text);
        reply.assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn every_spelling_of_an_ipv6_address_is_one_address() {
    let app = TestApp::spawn().await;
    let first = app.log_ip("2001:db8::1").await;
    assert_eq!(first["message"], "New IP logged");
    for spelling in [
        "2001:0DB8:0:0:0:0:0:1",
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        "2001:db8:0::1",
        "2001:DB8::0:0:1",
        "2001:db8:0:0:0::1",
    ] {
        let body = app.log_ip(spelling).await;
        assert_eq!(body["message"], "IP already seen", "{spelling}: {body}");
        assert_eq!(body["unique_ips"], 1, "{spelling}: {body}");
    }
    let stats = app.stats_json().await;
    assert_eq!(stats["unique_ipv6"], 1, "{stats}");
    assert_eq!(stats["unique_ipv4"], 0, "{stats}");
}

#[tokio::test]
async fn random_ipv6_addresses_compressed_and_expanded_are_the_same() {
    let app = TestApp::spawn().await;
    let addrs: Vec<Ipv6Addr> = (0..50)
        .map(|_| Ipv6Addr::from(rand::random::<u128>() | (1 << 127)))
        .collect();
    for a in &addrs {
        app.log_ip(&a.to_string()).await;
    }
    for a in &addrs {
        let s = a.segments();
        let expanded = s
            .iter()
            .map(|x| format!("{x:04X}"))
            .collect::<Vec<_>>()
            .join(":");
        let body = app.log_ip(&expanded).await;
        assert_eq!(
            body["message"], "IP already seen",
            "{a} vs {expanded}: {body}"
        );
    }
    assert_eq!(app.unique_count().await, 50);
}

#[tokio::test]
async fn an_ipv4_mapped_ipv6_address_is_the_ipv4_address() {
    let app = TestApp::spawn().await;
    assert_eq!(app.log_ip("1.2.3.4").await["message"], "New IP logged");
    for mapped in [
        "::ffff:1.2.3.4",
        "::FFFF:1.2.3.4",
        "::ffff:102:304",
        "0:0:0:0:0:ffff:0102:0304",
    ] {
        let body = app.log_ip(mapped).await;
        assert_eq!(body["message"], "IP already seen", "{mapped}: {body}");
    }
    // Mapped first, plain second: still one IPv4 address.
    assert_eq!(
        app.log_ip("::ffff:5.6.7.8").await["message"],
        "New IP logged"
    );
    assert_eq!(app.log_ip("5.6.7.8").await["message"], "IP already seen");

    let stats = app.stats_json().await;
    assert_eq!(stats["unique_ipv4"], 2, "{stats}");
    assert_eq!(stats["unique_ipv6"], 0, "{stats}");
    assert_eq!(stats["unique_ip_addresses"], 2, "{stats}");
}

#[tokio::test]
async fn an_ipv4_compatible_address_is_an_ipv6_address() {
    // Only the mapped form (::ffff:a.b.c.d) is IPv4; the deprecated compatible form is not.
    let app = TestApp::spawn().await;
    app.log_ip("1.2.3.4").await;
    let body = app.log_ip("::1.2.3.4").await;
    assert_eq!(body["message"], "New IP logged", "{body}");
    let stats = app.stats_json().await;
    assert_eq!(
        (stats["unique_ipv4"].as_u64(), stats["unique_ipv6"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
}

#[tokio::test]
async fn edge_addresses_are_valid() {
    let app = TestApp::spawn().await;
    let valid = [
        "0.0.0.0",
        "255.255.255.255",
        "127.0.0.1",
        "::",
        "::1",
        "fe80::1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "64:ff9b::192.0.2.33",
    ];
    for ip in valid {
        assert_eq!(app.log_ip(ip).await["message"], "New IP logged", "{ip}");
    }
    let stats = app.stats_json().await;
    assert_eq!(stats["unique_ipv4"], 3, "{stats}");
    assert_eq!(stats["unique_ipv6"], 5, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_count_each_address_exactly_once() {
    const DISTINCT: u32 = 600;
    const TASKS: u32 = 24;
    const PER_TASK: u32 = 75;
    let app = std::sync::Arc::new(TestApp::spawn().await);

    // Every task posts a stride of the same pool, so each address arrives from several tasks.
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut new = 0u32;
            for k in 0..PER_TASK {
                let n = (t * 7 + k * 8) % DISTINCT;
                let ip = if n.is_multiple_of(2) {
                    IpAddr::from([10, 1, (n >> 8) as u8, n as u8]).to_string()
                } else {
                    format!("2001:db8::{n:x}")
                };
                let body = app.log_ip(&ip).await;
                if body["message"] == "New IP logged" {
                    new += 1;
                }
            }
            new
        }));
    }
    let mut new_total = 0;
    for t in tasks {
        new_total += t.await.expect("task panicked");
    }
    let posted: std::collections::HashSet<u32> = (0..TASKS)
        .flat_map(|t| (0..PER_TASK).map(move |k| (t * 7 + k * 8) % DISTINCT))
        .collect();
    let expected = posted.len() as u64;
    assert!(expected > 300 && (TASKS * PER_TASK) as u64 > 2 * expected);
    assert_eq!(new_total as u64, expected, "\"New IP logged\" replies");
    assert_eq!(app.unique_count().await, expected);
    let stats = app.stats_json().await;
    let v4 = posted.iter().filter(|n| n.is_multiple_of(2)).count() as u64;
    assert_eq!(stats["unique_ipv4"], v4, "{stats}");
    assert_eq!(stats["unique_ipv6"], expected - v4, "{stats}");
}
