//! AUTH_TOKEN, AUTH_TOKEN_FILE and METRICS_AUTH_TOKEN: who gets in, what a refusal looks like,
//! and which endpoints stay open.

use std::time::Duration;

use crate::helpers::{Reply, ServerProcess, TestApp, metric_sum, run_to_exit};

const ENTRY: &str = r#"{"timestamp":"2024-01-01T00:00:00Z","ip":"203.0.113.7","url":"/"}"#;

async fn post_with(app: &TestApp, authorization: Option<&str>) -> Reply {
    let mut request = app
        .client
        .post(app.ingest_url("/logs"))
        .header("content-type", "application/json")
        .body(ENTRY);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    app.send(request).await
}

#[tokio::test]
async fn logs_need_one_of_the_tokens_and_a_refusal_changes_nothing() {
    let app = TestApp::spawn_with(&["--auth-token=old-token,new-token"]).await;

    for refused in [
        None,
        Some("Bearer wrong"),
        Some("Basic b2xkLXRva2Vu"),
        Some("old-token"),
    ] {
        let reply = post_with(&app, refused).await;
        reply.assert_error(401, "unauthorized");
        assert_eq!(
            reply.header("www-authenticate"),
            r#"Bearer realm="ip-counter""#,
            "{refused:?}"
        );
    }
    assert_eq!(app.unique_count().await, 0);

    let reply = post_with(&app, Some("Bearer old-token")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["message"], "New IP logged");
    let reply = post_with(&app, Some("Bearer new-token")).await;
    assert_eq!(reply.json()["message"], "IP already seen");

    let text = app.metrics_text().await;
    let refused = metric_sum(
        &text,
        "ipcounter_log_entries_rejected_total",
        &[("reason", "unauthorized")],
    );
    assert_eq!(refused, 4.0, "{text}");
}

#[tokio::test]
async fn batches_need_the_token_too() {
    let app = TestApp::spawn_with(&["--auth-token=t0ken"]).await;
    let body = "{\"ip\":\"10.0.0.1\"}\n{\"ip\":\"10.0.0.2\"}\n";
    app.post_raw(Some("application/x-ndjson"), body)
        .await
        .assert_error(401, "unauthorized");
    let reply = app
        .send(
            app.client
                .post(app.ingest_url("/logs"))
                .bearer_auth("t0ken")
                .header("content-type", "application/x-ndjson")
                .body(body),
        )
        .await;
    assert_eq!(reply.json()["accepted"], 2, "{}", reply.text);
}

#[tokio::test]
async fn health_ready_and_stats_stay_open() {
    let app = TestApp::spawn_with(&["--auth-token=t0ken", "--metrics-auth-token=m3trics"]).await;
    assert_eq!(app.health().await.status, 200);
    assert_eq!(app.ready().await.status, 200);
    assert_eq!(app.stats().await.status, 200);
    assert_eq!(app.metrics_health().await.status, 200);
}

#[tokio::test]
async fn metrics_need_their_own_token() {
    let app =
        TestApp::spawn_with(&["--auth-token=ingest-only", "--metrics-auth-token=m3trics"]).await;
    let scrape = |token: Option<&'static str>| {
        let mut request = app.client.get(app.metrics_url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        app.send(request)
    };
    scrape(None).await.assert_error(401, "unauthorized");
    scrape(Some("ingest-only"))
        .await
        .assert_error(401, "unauthorized");
    let reply = scrape(Some("m3trics")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.text.contains("unique_ip_addresses 0"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn tokens_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let flag = format!("--auth-token-file={}", file.display());
    let app = TestApp::spawn_with(&[&flag]).await;
    post_with(&app, None)
        .await
        .assert_error(401, "unauthorized");
    let reply = post_with(&app, Some("Bearer from-a-file")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn the_binary_reads_auth_token_from_its_environment() {
    let server = ServerProcess::start(&[], &[("AUTH_TOKEN", "env-token")]);
    server
        .post_ip("198.51.100.1")
        .await
        .assert_error(401, "unauthorized");
    let request = server
        .client
        .post(server.ingest_url("/logs"))
        .bearer_auth("env-token")
        .header("content-type", "application/json")
        .body(r#"{"ip":"198.51.100.1"}"#);
    let reply = Reply::read(request.send().await.unwrap()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[test]
fn a_missing_token_file_stops_the_start_with_status_2() {
    let run = run_to_exit(
        &["--auth-token-file=/nonexistent/ip-counter-token"],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(run.stderr.contains("AUTH_TOKEN_FILE"), "{run:?}");
}
