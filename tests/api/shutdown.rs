//! Graceful shutdown of the real binary: SIGTERM and SIGINT end it with status 0, and a request
//! already in flight is answered before it exits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helpers::{ServerProcess, status_of};

const EXIT_WITHIN: Duration = Duration::from_secs(5);

async fn exits_0_on(signal: &str) {
    let mut server = ServerProcess::start(&[], &[]);
    let reply = server.post_ip("192.0.2.10").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A pooled keep-alive connection stays open: an idle connection must not hold up the exit.
    assert_eq!(server.health().await.status, 200);

    server.signal(signal);
    let status = server.wait_exit(EXIT_WITHIN);
    assert_eq!(
        status.code(),
        Some(0),
        "SIG{signal}: {status}\n{}",
        server.output()
    );
    assert!(
        TcpStream::connect_timeout(&server.ingest, Duration::from_secs(1)).is_err(),
        "the ingest port still accepts after exit"
    );
}

#[tokio::test]
async fn sigterm_exits_0() {
    exits_0_on("TERM").await;
}

#[tokio::test]
async fn sigint_exits_0() {
    exits_0_on("INT").await;
}

#[tokio::test]
async fn sighup_without_certificates_does_not_end_the_service() {
    let server = ServerProcess::start(&[], &[]);
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.health().await.status, 200, "{}", server.output());
}

/// SIGTERM answers a request whose body has fully arrived, closes at once the connections
/// halfway through a request head or body (their clients would otherwise hold the exit for
/// REQUEST_TIMEOUT), and exits 0 within 2 s.
#[tokio::test]
async fn sigterm_finishes_requests_that_arrived_and_closes_half_received_ones() {
    let data = tempfile::tempdir().unwrap();
    let flag = format!("--data-dir={}", data.path().display());
    let mut server = ServerProcess::start(&[&flag, "--request-timeout=30s"], &[]);
    server.wait_ready().await;
    let open = |request: &[u8]| {
        let mut conn = TcpStream::connect(server.ingest).expect("connecting to ingest");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(request).unwrap();
        conn.flush().unwrap();
        conn
    };
    let half_head = open(b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Ty");
    let half_body = open(
        b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 40\r\n\r\n{\"ip\":\"198.51",
    );
    // A small gzip body that decodes to 2,000,000 lines: it has arrived whole well before the
    // signal, and is still being counted when it lands.
    let lines: String = (0..2_000_000u32)
        .map(|i| {
            format!(
                "{}\n",
                std::net::Ipv4Addr::from_bits(0x0a00_0000 + i % 1000)
            )
        })
        .collect();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(lines.as_bytes()).unwrap();
    let body = gzip.finish().unwrap();
    let head = format!(
        "POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut whole = open(&[head.as_bytes(), &body].concat());
    std::thread::sleep(Duration::from_millis(100));

    let signalled = std::time::Instant::now();
    server.signal("TERM");
    for (name, mut conn) in [("half a head", half_head), ("half a body", half_body)] {
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply);
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "{name}: the connection was held {:?}",
            signalled.elapsed()
        );
        assert!(
            reply.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let mut response = String::new();
    whole
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("reading the in-flight reply: {e}\n{}", server.output()));
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.contains(r#""accepted":2000000"#), "{response}");
    let status = server.wait_exit(Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.output());

    // What the finished request counted was kept.
    let server = ServerProcess::start(&[&flag], &[]);
    server.wait_ready().await;
    assert_eq!(server.unique_count().await, 1_000);
}
