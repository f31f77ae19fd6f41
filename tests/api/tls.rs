//! TLS_CERT/TLS_KEY and METRICS_TLS_CERT/METRICS_TLS_KEY against the real binary, with
//! self-signed certificates made here: HTTPS on each listener, and a SIGHUP that swaps the
//! certificate for new connections without dropping open ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::helpers::{ServerProcess, content_length, run_to_exit, status_of};

/// A self-signed certificate for `localhost`, written as `name.crt` and `name.key`.
struct Pair {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

fn make_pair(dir: &Path, name: &str) -> Pair {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    Pair {
        cert,
        key,
        der: made.cert.der().clone(),
    }
}

/// A TLS connection to `addr` that trusts exactly `trusted`.
async fn connect(addr: SocketAddr, trusted: &[&CertificateDer<'static>]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add((*cert).clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One keep-alive request on `stream`; returns the status and the body.
async fn exchange(stream: &mut TlsStream<TcpStream>, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a reply within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before a whole reply: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = content_length(head);
            if body.len() >= length {
                return (status_of(&text), body.to_owned());
            }
        }
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

#[tokio::test]
async fn both_listeners_speak_https_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = make_pair(dir.path(), "ingest");
    let metrics = make_pair(dir.path(), "metrics");
    let server = ServerProcess::start(
        &[],
        &[
            ("TLS_CERT", ingest.cert.to_str().unwrap()),
            ("TLS_KEY", ingest.key.to_str().unwrap()),
            ("METRICS_TLS_CERT", metrics.cert.to_str().unwrap()),
            ("METRICS_TLS_KEY", metrics.key.to_str().unwrap()),
        ],
    );
    let mut stream = connect(server.ingest, &[&ingest.der]).await;
    let body = r#"{"ip":"192.0.2.80"}"#;
    let post = format!(
        "POST /logs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, reply) = exchange(&mut stream, &post).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("New IP logged"), "{reply}");

    let mut scrape = connect(server.metrics, &[&metrics.der]).await;
    let (status, text) = exchange(&mut scrape, &get("/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("\nunique_ip_addresses 1\n"), "{text}");

    // Plain HTTP on a TLS port gets no HTTP reply.
    let mut plain = TcpStream::connect(server.ingest).await.unwrap();
    plain.write_all(get("/health").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_pair(dir.path(), "first");
    let server = ServerProcess::start(
        &[],
        &[
            ("TLS_CERT", first.cert.to_str().unwrap()),
            ("TLS_KEY", first.key.to_str().unwrap()),
        ],
    );
    let renewed = make_pair(dir.path(), "renewed");
    let mut open = connect(server.ingest, &[&first.der]).await;
    assert_eq!(presented(&open), first.der);
    assert_eq!(exchange(&mut open, &get("/health")).await.0, 200);

    std::fs::copy(&renewed.cert, &first.cert).unwrap();
    std::fs::copy(&renewed.key, &first.key).unwrap();
    server.signal("HUP");
    let mut swapped = false;
    for _ in 0..50 {
        let fresh = connect(server.ingest, &[&first.der, &renewed.der]).await;
        if presented(&fresh) == renewed.der {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swapped, "new connections still get the first certificate");
    // The connection opened before the reload is still served.
    assert_eq!(exchange(&mut open, &get("/health")).await.0, 200);

    // A broken renewal keeps the current certificate.
    std::fs::write(&first.cert, "not a certificate").unwrap();
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = connect(server.ingest, &[&renewed.der]).await;
    assert_eq!(presented(&fresh), renewed.der);
}

#[test]
fn a_bad_certificate_or_half_a_pair_stops_the_start_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "a");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "nothing here").unwrap();
    let cert = pair.cert.to_str().unwrap();
    for (envs, names) in [
        (vec![("TLS_CERT", cert)], "TLS_KEY"),
        (
            vec![
                ("TLS_CERT", garbage.to_str().unwrap()),
                ("TLS_KEY", pair.key.to_str().unwrap()),
            ],
            "TLS_CERT",
        ),
        (
            vec![("METRICS_TLS_KEY", pair.key.to_str().unwrap())],
            "METRICS_TLS_CERT",
        ),
    ] {
        let run = run_to_exit(&[], &envs, Duration::from_secs(10));
        assert_eq!(run.status.code(), Some(2), "{envs:?}: {run:?}");
        assert!(
            run.stderr.to_uppercase().contains(names),
            "{envs:?}: {run:?}"
        );
    }
}
