//! REQUEST_TIMEOUT, MAX_CONNECTIONS and RATE_LIMIT_PER_IP against the real binary: slow and idle
//! clients are cut off while others are served, excess connections wait, a flooding client
//! gets 429 and its excess never counts.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Reply, ServerProcess, content_length, status_of};

const ENTRY: &str = r#"{"ip":"192.0.2.44"}"#;

/// Reads until the server closes the connection or `within` passes; returns what arrived and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut got))
        .await
        .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

fn request(server: &ServerProcess, body: &str) -> String {
    format!(
        "POST /logs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        server.ingest,
        body.len()
    )
}

#[tokio::test]
async fn a_client_sending_headers_a_byte_at_a_time_is_cut_off_while_others_are_served() {
    let server = ServerProcess::start(&["--request-timeout=1s"], &[]);
    let mut slow = TcpStream::connect(server.ingest).await.unwrap();
    let started = Instant::now();
    let head = request(&server, ENTRY);
    let trickle = async {
        for byte in head.as_bytes() {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let others = async {
        // Meanwhile the service answers everybody else at once.
        for i in 0..5 {
            let reply = server.post_ip(&format!("198.51.100.{i}")).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(5), trickle)
                .await
                .ok();
        },
        others
    );
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(3)).await;
    assert!(closed, "the slow connection is still open");
    assert!(
        answer.is_empty(),
        "a cut-off request gets no reply: {answer:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "cut off after {took:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_request_timeout() {
    let server = ServerProcess::start(&["--request-timeout=1s"], &[]);
    let mut stream = TcpStream::connect(server.ingest).await.unwrap();
    stream
        .write_all(request(&server, ENTRY).as_bytes())
        .await
        .unwrap();
    let mut reply = [0u8; 512];
    let n = stream.read(&mut reply).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&reply[..n])), 200);
    let idle = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(4)).await;
    assert!(closed, "the idle connection is still open");
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408_request_timeout() {
    let server = ServerProcess::start(&["--request-timeout=1s"], &[]);
    let mut stream = TcpStream::connect(server.ingest).await.unwrap();
    let head = format!(
        "POST /logs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"ip\":",
        server.ingest
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(4)).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn connections_past_max_connections_wait_until_one_closes() {
    let server = ServerProcess::start(&["--max-connections=2"], &[]);
    let first = TcpStream::connect(server.ingest).await.unwrap();
    let _second = TcpStream::connect(server.ingest).await.unwrap();
    // Let the service accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut third = TcpStream::connect(server.ingest).await.unwrap();
    third
        .write_all(request(&server, ENTRY).as_bytes())
        .await
        .unwrap();
    let mut reply = [0u8; 512];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut reply)).await;
    assert!(
        waited.is_err(),
        "the third connection was served while two were open"
    );

    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut reply))
        .await
        .expect("the third connection is served once one closes")
        .unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&reply[..n])), 200);
}

#[tokio::test]
async fn a_client_over_rate_limit_per_ip_gets_429_and_its_excess_never_counts() {
    let server = ServerProcess::start(&["--rate-limit-per-ip=5"], &[]);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let reply = server.post_ip(&format!("203.0.113.{i}")).await;
        if reply.status == 429 {
            reply.assert_error(429, "rate_limited");
            let wait: u64 = reply.header("retry-after").parse().unwrap();
            assert!((1..=2).contains(&wait), "Retry-After: {wait}");
        }
        statuses.push(reply.status);
    }
    // Five at once is the burst; the test's eight requests take far less than the 200 ms after
    // which a sixth would be let in.
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let stats = server
        .client
        .get(server.ingest_url("/stats"))
        .send()
        .await
        .unwrap();
    let stats = Reply::read(stats).await.json();
    assert_eq!(stats["unique_ip_addresses"], 5, "{stats}");
    // Health checks are never limited.
    for _ in 0..10 {
        assert_eq!(server.health().await.status, 200);
    }
}

/// One HTTP/1.1 reply read off a raw connection: the status, the head's lines and the body
/// (by `Content-Length`); `None` when the connection closes first.
async fn read_reply(stream: &mut TcpStream) -> Option<(u16, String, String)> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => got.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let length = content_length(&head);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((
        status_of(&head),
        head,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

fn says_close(head: &str) -> bool {
    head.to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n")
}

/// A burst on one keep-alive connection past RATE_LIMIT_PER_IP gets every reply: a 429 either
/// leaves the connection open or says `Connection: close` before it is closed.
#[tokio::test]
async fn a_burst_on_one_keep_alive_connection_sees_no_unannounced_close() {
    let server = ServerProcess::start(&["--rate-limit-per-ip=50"], &[]);
    let mut conn = TcpStream::connect(server.ingest).await.unwrap();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..300 {
        let body = format!(r#"{{"ip":"198.51.100.{}"}}"#, i % 200);
        conn.write_all(request(&server, &body).as_bytes())
            .await
            .unwrap();
        let (status, head, text) = read_reply(&mut conn)
            .await
            .unwrap_or_else(|| panic!("request {i}: closed without a reply or a warning"));
        match status {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("request {i}: {other} {text}"),
        }
        if says_close(&head) {
            conn = TcpStream::connect(server.ingest).await.unwrap();
        }
    }
    assert!(ok >= 50 && limited > 0, "{ok} ok, {limited} limited");
}

/// A body refused as too large before it is read says `Connection: close`, and the connection
/// is then closed.
#[tokio::test]
async fn a_413_before_the_body_is_read_says_connection_close() {
    let server = ServerProcess::start(&["--max-body-bytes=1KiB"], &[]);
    let mut conn = TcpStream::connect(server.ingest).await.unwrap();
    let head = format!(
        "POST /logs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: 4096\r\n\r\n",
        server.ingest
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (status, head, _) = read_reply(&mut conn).await.expect("a reply");
    assert_eq!(status, 413);
    assert!(says_close(&head), "{head}");
    let (_, closed) = read_until_closed(&mut conn, Duration::from_secs(2)).await;
    assert!(closed);
}

/// With MAX_INFLIGHT_BODY_BYTES taken by bodies still arriving, a further request waits, then
/// gets 503 `overloaded` with Retry-After and changes nothing; once they are gone it is counted.
#[tokio::test]
async fn bodies_past_max_inflight_body_bytes_get_503_overloaded() {
    let server = ServerProcess::start(
        &[
            "--max-body-bytes=1MiB",
            "--max-inflight-body-bytes=2MiB",
            "--persistence=off",
        ],
        &[],
    );
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(server.ingest).await.unwrap();
        let head = format!(
            "POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n1.2.3.4\n",
            1 << 20
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        holders.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let reply = server.post_ip("192.0.2.77").await;
    reply.assert_error(503, "overloaded");
    assert_eq!(reply.header("retry-after"), "1");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.unique_count().await, 0);

    drop(holders);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = server.post_ip("192.0.2.77").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(server.unique_count().await, 1);
}

/// A body sent to a route that reads none (here `POST /stats`, 405) is left unread, so the
/// reply says `Connection: close`.
#[tokio::test]
async fn a_body_sent_to_a_route_that_reads_none_gets_connection_close() {
    let server = ServerProcess::start(&[], &[]);
    let mut conn = TcpStream::connect(server.ingest).await.unwrap();
    let request = format!(
        "POST /stats HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\n\r\nhello",
        server.ingest
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let (status, head, _) = read_reply(&mut conn).await.expect("a reply");
    assert_eq!(status, 405);
    assert!(says_close(&head), "{head}");
}
