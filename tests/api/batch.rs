//! `POST /logs` batch bodies: NDJSON/JSONL, JSON arrays and access-log text, plain or gzip; the
//! batch reply, line-numbered errors, limits on the decoded size, and the entry metrics.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, metric_sum};

const NDJSON: &str = "application/x-ndjson";
const JSONL: &str = "application/jsonl";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// `POST /logs` with this content type and, when given, this `Content-Encoding`.
async fn post(app: &TestApp, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> Reply {
    let mut request = app
        .client
        .post(app.ingest_url("/logs"))
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    app.send(request).await
}

/// Asserts a 200 batch reply and returns it.
#[track_caller]
fn batch_reply(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.content_type().starts_with("application/json"),
        "{}",
        reply.content_type()
    );
    let body = reply.json();
    assert_eq!(body["status"], "success", "{body}");
    body
}

/// The `(line, error)` pairs of a batch reply.
fn listed(body: &Value) -> Vec<(u64, String)> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {body}"))
        .iter()
        .map(|e| {
            assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
            (
                e["line"].as_u64().unwrap(),
                e["error"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(u64, &str)]) -> Vec<(u64, String)> {
    v.iter().map(|&(n, e)| (n, e.to_string())).collect()
}

const MIXED_NDJSON: &str = "{\"timestamp\":\"2020-06-24T15:27:00.123456Z\",\"ip\":\"83.150.59.250\",\"url\":\"/a\"}\r\n\
    \r\n\
    {\"ip\":\"1.2.3\"}\n\
    {\"ip\":\"2001:db8::1\"}\n\
    not json\n\
    \n\
    {\"url\":\"/no-ip\"}\n\
    {\"ip\":\"83.150.59.250\"}\n\
    {\"ip\":\"10.0.0.1\",\"timestamp\":\"yesterday\"}\n\
    {\"ip\":\"2001:0DB8:0:0:0:0:0:1\"}";

#[tokio::test]
async fn ndjson_and_jsonl_count_good_lines_and_list_bad_ones() {
    for content_type in [
        NDJSON,
        JSONL,
        "application/x-ndjson; charset=utf-8",
        "application/jsonlines",
        "application/x-jsonlines",
    ] {
        let app = TestApp::spawn().await;
        app.log_ip("83.150.59.250").await;
        let reply = post(&app, content_type, None, MIXED_NDJSON.into()).await;
        let body = batch_reply(&reply);
        assert_eq!(body["accepted"], 4, "{content_type}: {body}");
        assert_eq!(body["rejected"], 4, "{body}");
        assert_eq!(body["new_ips"], 1, "{body}");
        assert_eq!(body["unique_ips"], 2, "{body}");
        assert_eq!(
            listed(&body),
            pairs(&[
                (3, "invalid_ip"),
                (5, "invalid_json"),
                (7, "missing_ip"),
                (9, "invalid_timestamp")
            ]),
            "{body}"
        );
        assert_eq!(app.unique_count().await, 2);
    }
}

#[tokio::test]
async fn the_reply_has_exactly_the_spec_fields() {
    let app = TestApp::spawn().await;
    let reply = post(
        &app,
        NDJSON,
        None,
        "{\"ip\":\"1.2.3.4\"}\n{\"ip\":\"x\"}\n".into(),
    )
    .await;
    assert_eq!(
        batch_reply(&reply),
        json!({
            "status": "success", "accepted": 1, "rejected": 1, "new_ips": 1, "unique_ips": 1,
            "errors": [{"line": 2, "error": "invalid_ip",
                        "message": "\"x\" is not a valid IPv4 or IPv6 address"}]
        })
    );
}

#[tokio::test]
async fn a_json_array_is_a_batch_and_one_object_keeps_its_reply() {
    let app = TestApp::spawn().await;
    let array = json!([
        {"ip": "192.0.2.1", "timestamp": "2020-06-24T15:27:00Z"},
        {"ip": "192.0.2.1"},
        {"ip": "192.0.2.300"},
        "192.0.2.2",
        {"ip": "::ffff:192.0.2.3"},
    ]);
    let body = batch_reply(&post(&app, JSON, None, array.to_string().into()).await);
    assert_eq!(
        (&body["accepted"], &body["rejected"], &body["new_ips"]),
        (&json!(3), &json!(2), &json!(2)),
        "{body}"
    );
    assert_eq!(
        listed(&body),
        pairs(&[(3, "invalid_ip"), (4, "invalid_json")])
    );

    let empty = batch_reply(&post(&app, JSON, None, b" [ ] ".to_vec()).await);
    assert_eq!(empty["accepted"], 0, "{empty}");
    assert_eq!(empty["unique_ips"], 2, "{empty}");

    let one = post(&app, JSON, None, br#"{"ip":"192.0.2.9"}"#.to_vec()).await;
    assert_eq!(
        one.json(),
        json!({"status": "success", "message": "New IP logged", "unique_ips": 3})
    );
    post(&app, JSON, None, br#"{"ip":"bad"}"#.to_vec())
        .await
        .assert_error(400, "invalid_ip");
}

#[tokio::test]
async fn an_array_that_cannot_be_read_is_invalid_body_and_counts_nothing() {
    let app = TestApp::spawn().await;
    for body in [
        r#"[{"ip":"10.9.0.1"},"#,
        r#"[{"ip":"10.9.0.1"}] trailing"#,
        r#"[{"ip":"10.9.0.1"} {"ip":"10.9.0.2"}]"#,
    ] {
        post(&app, JSON, None, body.into())
            .await
            .assert_error(400, "invalid_body");
    }
    assert_eq!(app.unique_count().await, 0);
}

#[tokio::test]
async fn access_log_text_in_every_shape() {
    let app = TestApp::spawn().await;
    let log = "83.150.59.250 - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/1.1\" 200 612 \"-\" \"Mozilla/5.0\"\n\
        10.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326\r\n\
        2001:db8::7 - - [24/Jun/2020:15:27:01 +0000] \"GET /v6 HTTP/2.0\" 404 0 \"https://a.example/\" \"-\"\n\
        \n\
        - - - [24/Jun/2020:15:27:02 +0000] \"\\x16\\x03\" 400 157 \"-\" \"-\"\n\
        192.0.2.44\tGET\t/custom-format\n\
        host.example.com - - [24/Jun/2020:15:27:03 +0000] \"GET / HTTP/1.1\" 200 1\n\
        83.150.59.250 - - [24/Jun/2020:15:27:04 +0000] \"GET /again HTTP/1.1\" 200 1 \"-\" \"-\"\n";
    let body = batch_reply(&post(&app, "text/plain; charset=utf-8", None, log.into()).await);
    assert_eq!(body["accepted"], 5, "{body}");
    assert_eq!(body["rejected"], 2, "{body}");
    assert_eq!(body["new_ips"], 4, "{body}");
    assert_eq!(
        listed(&body),
        pairs(&[(5, "invalid_ip"), (7, "invalid_ip")])
    );
    let stats = app.stats_json().await;
    assert_eq!(
        (&stats["unique_ipv4"], &stats["unique_ipv6"]),
        (&json!(3), &json!(1))
    );
}

#[tokio::test]
async fn every_body_type_may_be_gzip_encoded() {
    let app = TestApp::spawn().await;
    let cases: [(&str, Option<&str>, &str, u64); 6] = [
        (
            NDJSON,
            Some("gzip"),
            "{\"ip\":\"10.1.0.1\"}\n{\"ip\":\"10.1.0.2\"}\n",
            2,
        ),
        (JSONL, Some("GZIP"), "{\"ip\":\"10.1.0.3\"}\n", 1),
        (
            JSON,
            Some("gzip"),
            r#"[{"ip":"10.1.0.4"},{"ip":"10.1.0.5"}]"#,
            2,
        ),
        (
            TEXT,
            Some("x-gzip"),
            "10.1.0.6 - - [x] \"GET /\" 200 1\n",
            1,
        ),
        (TEXT, Some("identity"), "10.1.0.7\n", 1),
        (NDJSON, None, "{\"ip\":\"10.1.0.8\"}", 1),
    ];
    let mut total = 0;
    for (content_type, encoding, text, accepted) in cases {
        let bytes = match encoding {
            Some(e) if e.to_ascii_lowercase().contains("gzip") => gzip(text.as_bytes()),
            _ => text.as_bytes().to_vec(),
        };
        let body = batch_reply(&post(&app, content_type, encoding, bytes).await);
        total += accepted;
        assert_eq!(
            body["accepted"], accepted,
            "{content_type} {encoding:?}: {body}"
        );
        assert_eq!(
            body["unique_ips"], total,
            "{content_type} {encoding:?}: {body}"
        );
    }

    // The seed format, gzip-encoded, keeps its reply.
    let one = post(&app, JSON, Some("gzip"), gzip(br#"{"ip":"10.1.0.9"}"#)).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json()["message"], "New IP logged");
}

#[tokio::test]
async fn broken_gzip_is_invalid_body_and_other_encodings_are_refused() {
    let app = TestApp::spawn().await;
    let mut truncated = gzip(&b"{\"ip\":\"10.2.0.1\"}\n".repeat(500));
    truncated.truncate(truncated.len() / 2);
    for body in [b"not gzip".to_vec(), truncated] {
        post(&app, NDJSON, Some("gzip"), body)
            .await
            .assert_error(400, "invalid_body");
    }
    for encoding in ["br", "deflate", "gzip, gzip", "compress"] {
        post(
            &app,
            NDJSON,
            Some(encoding),
            b"{\"ip\":\"10.2.0.2\"}".to_vec(),
        )
        .await
        .assert_error(415, "unsupported_media_type");
    }
    assert_eq!(app.unique_count().await, 0);
}

#[tokio::test]
async fn the_limit_applies_to_the_decoded_body() {
    let app = TestApp::spawn_with(&["--max-body-bytes=64KiB"]).await;
    let line = b"{\"ip\":\"10.3.0.1\"}\n";
    // Just under the limit decoded: accepted, plain and compressed.
    let under = line.repeat(64 * 1024 / line.len());
    assert!(under.len() <= 64 * 1024);
    let reply = post(&app, NDJSON, None, under.clone()).await;
    batch_reply(&reply);
    let reply = post(&app, NDJSON, Some("gzip"), gzip(&under)).await;
    batch_reply(&reply);
    // Over it: refused, even though the compressed body is tiny.
    let over = line.repeat(64 * 1024 / line.len() + 1);
    post(&app, NDJSON, None, over.clone())
        .await
        .assert_error(413, "body_too_large");
    let compressed = gzip(&over);
    assert!(compressed.len() < 4096, "{}", compressed.len());
    post(&app, NDJSON, Some("gzip"), compressed)
        .await
        .assert_error(413, "body_too_large");
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_early_with_413() {
    let app = TestApp::spawn_with(&["--max-body-bytes=1MiB"]).await;
    // 256 MiB of blank lines in about 250 KiB. Inflating it fully would take seconds and the
    // memory; refused at the first MiB it takes milliseconds.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    let chunk = vec![b'\n'; 1 << 20];
    for _ in 0..256 {
        encoder.write_all(&chunk).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    for content_type in [NDJSON, TEXT, JSON] {
        post(&app, content_type, Some("gzip"), bomb.clone())
            .await
            .assert_error(413, "body_too_large");
    }
    assert_eq!(app.health().await.status, 200);
}

#[tokio::test]
async fn at_most_100_errors_are_listed() {
    let app = TestApp::spawn().await;
    let mut text = String::new();
    for i in 0..300 {
        if i % 2 == 0 {
            text.push_str("bad-address - - [x]\n");
        } else {
            text.push_str(&format!("10.4.{}.{} - - [x]\n", i / 256, i % 256));
        }
    }
    let body = batch_reply(&post(&app, TEXT, None, text.into()).await);
    assert_eq!(
        (&body["accepted"], &body["rejected"]),
        (&json!(150), &json!(150))
    );
    let errors = listed(&body);
    assert_eq!(errors.len(), 100);
    assert_eq!(errors.first().unwrap().0, 1);
    assert_eq!(errors.last().unwrap().0, 199);
}

#[tokio::test]
async fn entry_metrics_count_every_line_by_reason() {
    let app = TestApp::spawn().await;
    let received = |t: &str| metric_sum(t, "ipcounter_log_entries_received_total", &[]);
    let rejected =
        |t: &str, r: &str| metric_sum(t, "ipcounter_log_entries_rejected_total", &[("reason", r)]);
    let before = app.metrics_text().await;
    batch_reply(&post(&app, NDJSON, None, MIXED_NDJSON.into()).await);
    post(&app, JSON, None, b"[1,".to_vec())
        .await
        .assert_error(400, "invalid_body");
    let after = app.metrics_text().await;
    // 8 non-blank lines, and the unreadable body as one entry.
    assert_eq!(received(&after) - received(&before), 9.0);
    for (reason, n) in [
        ("invalid_ip", 1.0),
        ("invalid_json", 1.0),
        ("missing_ip", 1.0),
        ("invalid_timestamp", 1.0),
        ("invalid_body", 1.0),
    ] {
        assert_eq!(
            rejected(&after, reason) - rejected(&before, reason),
            n,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn a_large_batch_is_counted_exactly() {
    let app = TestApp::spawn().await;
    let mut body = String::new();
    for i in 0..50_000u32 {
        // 20,000 distinct addresses, each seen two or three times.
        let n = i % 20_000;
        body.push_str(&format!(
            "{{\"ip\":\"10.{}.{}.{}\"}}\n",
            n >> 16,
            (n >> 8) & 255,
            n & 255
        ));
    }
    let reply = post(&app, NDJSON, Some("gzip"), gzip(body.as_bytes())).await;
    let body = batch_reply(&reply);
    assert_eq!(body["accepted"], 50_000, "{body}");
    assert_eq!(body["new_ips"], 20_000, "{body}");
    assert_eq!(app.unique_count().await, 20_000);
}

/// NDJSON sent as `application/json` is refused whole, and the message says what to send.
#[tokio::test]
async fn ndjson_labelled_application_json_names_the_ndjson_type() {
    let app = TestApp::spawn().await;
    let body = "{\"ip\":\"192.0.2.1\"}\n{\"ip\":\"192.0.2.2\"}\n";
    let reply = post(&app, "application/json", None, body.into()).await;
    reply.assert_error(400, "invalid_json");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("send it as application/x-ndjson"),
        "{}",
        reply.text
    );
    assert_eq!(app.unique_count().await, 0);
    // One object with a trailing line break is still one entry.
    let reply = post(
        &app,
        "application/json",
        None,
        "{\"ip\":\"192.0.2.1\"}\n".into(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}
