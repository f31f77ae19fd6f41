//! `ip-counter send`, the real binary posting temporary files to the service in-process: batches,
//! formats, line numbers of rejected lines, a 4xx that stops the run, and retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::count::write_file;
use crate::helpers::{Finished, TestApp, free_port, run_to_exit};

/// Runs `ip-counter send ARGS` off the runtime, so that the in-process service keeps serving.
async fn send(args: Vec<String>) -> Finished {
    tokio::task::spawn_blocking(move || {
        let mut all = vec!["send"];
        all.extend(args.iter().map(String::as_str));
        run_to_exit(&all, &[], Duration::from_secs(60))
    })
    .await
    .unwrap()
}

/// The summary of a run that exited 0 (every line accepted).
#[track_caller]
fn summary(run: &Finished) -> Value {
    summary_of(run, 0)
}

/// The summary of a run that exited with `code` (3: the service rejected lines).
#[track_caller]
fn summary_of(run: &Finished, code: i32) -> Value {
    assert_eq!(run.status.code(), Some(code), "{run:?}");
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {run:?}"))
}

fn s(text: impl Into<String>) -> String {
    text.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfills_ndjson_and_text_files_in_batches() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let mut ndjson = String::new();
    for i in 0..25 {
        ndjson.push_str(&format!("{{\"ip\":\"10.5.0.{i}\"}}\n"));
    }
    ndjson.push_str("{\"ip\":\"10.5.0.999\"}\n");
    let entries = write_file(dir.path(), "entries.ndjson.gz", ndjson.as_bytes());
    let access = write_file(
        dir.path(),
        "access.log",
        b"10.5.0.1 - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"\n\
          2001:db8::5 - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"\n\
          \n\
          - - - [24/Jun/2020:15:27:00 +0000] \"-\" 400 0 \"-\" \"-\"\n",
    );
    let run = send(vec![
        format!("--to=http://{}", app.ingest),
        s("--batch-lines=10"),
        s("--json"),
        s(entries.to_str().unwrap()),
        s(access.to_str().unwrap()),
    ])
    .await;
    // 26 lines in 3 requests, 4 lines in 1; rejected lines make the exit status 3.
    assert_eq!(
        summary_of(&run, 3),
        json!({"lines": 30, "requests": 4, "accepted": 27, "rejected": 2, "unique_ips": 26})
    );
    assert_eq!(app.unique_count().await, 26);
    // Rejected lines are named by file and line.
    assert!(
        run.stderr.contains("entries.ndjson.gz:26:") && run.stderr.contains("access.log:4:"),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_what_it_sent_and_the_final_count() {
    let app = TestApp::spawn().await;
    app.log_ip("192.0.2.200").await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "a.log",
        b"192.0.2.1 x\n192.0.2.2 y\n192.0.2.1 z\n",
    );
    let run = send(vec![
        format!("--to=http://{}/logs", app.ingest),
        s(file.to_str().unwrap()),
    ])
    .await;
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert_eq!(
        run.stdout,
        "sent 3 lines in 1 request: 3 accepted, 0 rejected; unique_ips 3\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_stops_the_run_with_the_servers_message() {
    let app = TestApp::spawn_with(&["--max-body-bytes=1KiB"]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut log = String::new();
    for i in 0..2000 {
        log.push_str(&format!(
            "10.6.{}.{} - - [x] \"GET /\" 200 1\n",
            i / 256,
            i % 256
        ));
    }
    let file = write_file(dir.path(), "big.log", log.as_bytes());
    let run = send(vec![
        format!("--to=http://{}", app.ingest),
        s(file.to_str().unwrap()),
    ])
    .await;
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains("413") && run.stderr.contains("body_too_large"),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(app.unique_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_a_token_gets_it_from_token() {
    let app = TestApp::spawn_with(&["--auth-token=backfill-t0ken"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "a.log",
        b"192.0.2.9 x
",
    );
    let to = format!("--to=http://{}", app.ingest);
    let path = s(file.to_str().unwrap());

    let refused = send(vec![to.clone(), path.clone()]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("401") && refused.stderr.contains("unauthorized"),
        "{refused:?}"
    );

    let run = send(vec![to, s("--token=backfill-t0ken"), path]).await;
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert_eq!(app.unique_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_certificate_needs_cacert() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = write_file(dir.path(), "service.crt", made.cert.pem().as_bytes());
    let key = write_file(
        dir.path(),
        "service.key",
        made.signing_key.serialize_pem().as_bytes(),
    );
    let app = TestApp::spawn_with(&[
        &format!("--tls-cert={}", cert.display()),
        &format!("--tls-key={}", key.display()),
    ])
    .await;
    let file = write_file(dir.path(), "a.log", b"192.0.2.77 x\n");
    let to = format!("--to=https://{}", app.ingest);
    let path = s(file.to_str().unwrap());

    // The public roots do not vouch for a self-signed certificate: a connection error, retried.
    let untrusted = send(vec![to.clone(), s("--retries=0"), path.clone()]).await;
    assert_eq!(untrusted.status.code(), Some(1), "{untrusted:?}");

    let run = send(vec![
        to,
        format!("--cacert={}", cert.display()),
        s("--json"),
        path,
    ])
    .await;
    assert_eq!(summary(&run)["accepted"], 1, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "a.log", b"10.7.0.1\n");
    let port = free_port();
    let started = Instant::now();
    let run = send(vec![
        format!("--to=http://127.0.0.1:{port}"),
        s("--retries=2"),
        s(file.to_str().unwrap()),
    ])
    .await;
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("after 3 attempts"), "{run:?}");
    // Two waits: 0.2s and 0.4s.
    assert!(started.elapsed() >= Duration::from_millis(600), "{run:?}");
}

/// A stand-in service: answers the first `failures` requests with 503, then a batch reply.
async fn flaky_service(failures: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            // Read the head and the Content-Length body before answering.
            let mut buf = Vec::new();
            let mut byte = [0u8; 4096];
            let head_end = loop {
                let got = stream.read(&mut byte).await.unwrap_or(0);
                if got == 0 {
                    break None;
                }
                buf.extend_from_slice(&byte[..got]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < head_end + length {
                let got = stream.read(&mut byte).await.unwrap_or(0);
                if got == 0 {
                    break;
                }
                buf.extend_from_slice(&byte[..got]);
            }
            let (status, body) = if n < failures {
                ("503 Service Unavailable", s("busy"))
            } else {
                (
                    "200 OK",
                    json!({"status": "success", "accepted": 1, "rejected": 0, "new_ips": 1,
                           "unique_ips": 1, "errors": []})
                    .to_string(),
                )
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    (addr, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried_until_it_succeeds() {
    let (addr, requests) = flaky_service(2).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "a.log", b"10.8.0.1\n");
    let run = send(vec![
        format!("--to=http://{addr}"),
        s("--json"),
        s(file.to_str().unwrap()),
    ])
    .await;
    assert_eq!(summary(&run)["accepted"], 1, "{run:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}
