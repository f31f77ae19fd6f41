//! Graceful shutdown of the real binary: SIGTERM and SIGINT end it with status 0, and a request
//! already in flight is answered before it exits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helpers::{ServerProcess, client, status_of};

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

#[tokio::test]
async fn a_request_in_flight_is_finished_before_exit() {
    let mut server = ServerProcess::start(&[], &[]);
    let body = br#"{"ip":"198.51.100.200","url":"/slow"}"#;
    let (head, tail) = body.split_at(10);

    // Headers and part of the body now, the rest after the signal.
    let mut conn = TcpStream::connect(server.ingest).expect("connecting to ingest");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "POST /logs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        server.ingest,
        body.len()
    )
    .unwrap();
    conn.write_all(head).unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));

    // Draining: no new request may be served as if nothing happened.
    let fresh = client()
        .get(server.ingest_url("/health"))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    if let Ok(reply) = fresh {
        assert!(
            !reply.status().is_success(),
            "a new request was served normally after SIGTERM: {}",
            reply.status()
        );
    }

    conn.write_all(tail).unwrap();
    conn.flush().unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("reading the in-flight reply: {e}\n{}", server.output()));
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.contains("New IP logged"), "{response}");

    let status = server.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.output());
}
