//! `GET /openapi.json` is kept true: every reply the service gives, for every route and status
//! the document lists, is provoked here and validated against the document's schema for it,
//! and every status the service can answer on a documented route is in the document.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Reply, TestApp};

/// The document as served.
async fn document(app: &TestApp) -> Value {
    let reply = app
        .ingest_request(reqwest::Method::GET, "/openapi.json")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.content_type().starts_with("application/json"));
    reply.json()
}

/// JSON-pointer escaping of one path segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Checks `body` against the schema the document gives for `status` of `method path`.
fn check(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let mut pointer = format!("/paths/{}/{method}/responses/{status}", escape(path));
    let response = doc
        .pointer(&pointer)
        .unwrap_or_else(|| panic!("{method} {path} answers {status}, which the document lacks"));
    if let Some(target) = response.get("$ref").and_then(Value::as_str) {
        pointer = target.trim_start_matches('#').to_owned();
    }
    // The whole document as the root resource, so that the schema's own $refs resolve.
    let mut schema = doc.clone();
    schema["$ref"] = json!(format!("#{pointer}/content/application~1json/schema"));
    let validator = jsonschema::draft202012::new(&schema).expect("the document's schema compiles");
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {body} does not match the document: {errors:?}"
    );
}

fn json_of(reply: &Reply) -> Value {
    reply.json()
}

#[tokio::test]
async fn every_reply_matches_the_document_and_every_status_is_documented() {
    let app = TestApp::spawn_with(&["--max-body-bytes=1KiB"]).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut seen: BTreeSet<(String, String, u16)> = BTreeSet::new();
    let mut see = |method: &str, path: &str, reply: &Reply| {
        check(&doc, method, path, reply.status, &json_of(reply));
        seen.insert((method.to_owned(), path.to_owned(), reply.status));
    };

    let bodies: [(&str, String); 7] = [
        ("application/json", r#"{"ip":"192.0.2.1"}"#.into()),
        (
            "application/x-ndjson",
            "{\"ip\":\"192.0.2.2\"}\n{\"ip\":\"x\"}\n".into(),
        ),
        ("application/json", r#"[{"ip":"192.0.2.3"},{}]"#.into()),
        ("text/plain", "192.0.2.4 - -\nbad\n".into()),
        ("application/json", r#"{"ip":"1.2.3"}"#.into()),
        ("application/json", "x".repeat(2000)),
        ("text/html", "<p>".into()),
    ];
    for (content_type, body) in bodies {
        see(
            "post",
            "/logs",
            &app.post_raw(Some(content_type), body).await,
        );
    }
    see(
        "post",
        "/logs",
        &app.ingest_request(reqwest::Method::PUT, "/logs").await,
    );
    see("get", "/health", &app.health().await);
    see("get", "/ready", &app.ready().await);
    see("get", "/stats", &app.stats().await);

    let guarded = TestApp::spawn_with(&[
        "--auth-token=t0ken",
        "--rate-limit-per-ip=1",
        "--request-timeout=1s",
    ])
    .await;
    // Without the token: the first request passes the rate limit and is refused for the token
    // (401), the second is over the limit (429, checked first).
    see(
        "post",
        "/logs",
        &guarded
            .post_raw(Some("application/json"), r#"{"ip":"192.0.2.5"}"#)
            .await,
    );
    let limited = guarded
        .post_raw(Some("application/json"), r#"{"ip":"192.0.2.5"}"#)
        .await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").parse::<u64>().unwrap() >= 1);
    see("post", "/logs", &limited);

    // 408: a body that stops arriving.
    let slow = TestApp::spawn_with(&["--request-timeout=1s"]).await;
    let mut stream = tokio::net::TcpStream::connect(slow.ingest).await.unwrap();
    stream
        .write_all(b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(4), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a 408 reply");
    assert!(head.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(body).unwrap();
    check(&doc, "post", "/logs", 408, &body);
    seen.insert(("post".into(), "/logs".into(), 408));
    let openapi = app
        .ingest_request(reqwest::Method::GET, "/openapi.json")
        .await;
    assert_eq!(openapi.status, 200);
    seen.insert(("get".into(), "/openapi.json".into(), 200));

    // Every status the document lists was seen, except /ready's 503, which only a service that
    // is starting or stopping gives (tests/api/shutdown.rs and health.rs cover it), and
    // /logs's 503, which needs a failing disk (tests/api/persistence.rs, with prlimit).
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for status in operation["responses"].as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone(), status.parse::<u16>().unwrap()));
            }
        }
    }
    documented.remove(&("get".to_owned(), "/ready".to_owned(), 503));
    documented.remove(&("post".to_owned(), "/logs".to_owned(), 503));
    let missing: Vec<_> = documented.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "documented but never provoked: {missing:?}"
    );
}
