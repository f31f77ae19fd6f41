//! `PROXY_PROTOCOL=on` behind a real haproxy (Debian package): one frontend forwarding with
//! `send-proxy` (v1), one with `send-proxy-v2`, and clients on distinct 127.x.y.z source
//! addresses. RATE_LIMIT_PER_IP must see each client, not haproxy; a connection that skips the
//! balancer is refused and counted.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, free_port, metric_sum, require_tool, status_of};

/// A private haproxy in the foreground, killed on drop.
struct Haproxy {
    child: Child,
    /// Frontend whose backend connection starts with a v1 (text) header.
    v1: SocketAddr,
    /// Frontend whose backend connection starts with a v2 (binary) header.
    v2: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(backend: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let v1 = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let v2 = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!(
            "defaults\n\
             \x20 mode http\n\
             \x20 timeout connect 2s\n\
             \x20 timeout client 10s\n\
             \x20 timeout server 10s\n\
             frontend v1\n\
             \x20 bind {v1}\n\
             \x20 default_backend v1\n\
             frontend v2\n\
             \x20 bind {v2}\n\
             \x20 default_backend v2\n\
             backend v1\n\
             \x20 option httpchk GET /ready\n\
             \x20 server ip-counter {backend} send-proxy check inter 100ms fall 1 rise 1\n\
             backend v2\n\
             \x20 option httpchk GET /ready\n\
             \x20 server ip-counter {backend} send-proxy-v2 check inter 100ms fall 1 rise 1\n"
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(require_tool("haproxy"))
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting haproxy");
        let haproxy = Haproxy {
            child,
            v1,
            v2,
            _dir: dir,
        };
        for addr in [v1, v2] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "haproxy is not listening on {addr}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /logs` for `ip` to `to`, on a connection from the source address `from`; what came
/// back before the connection closed (an error when it was reset).
async fn post_from(from: Ipv4Addr, to: SocketAddr, ip: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!({"timestamp": "2024-01-01T00:00:00Z", "ip": ip, "url": "/"}).to_string();
    let request = format!(
        "POST /logs HTTP/1.1\r\nHost: ip-counter\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((from, 0)))?;
        let mut stream = socket.connect(to).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s")
}

/// The status `post_from` got.
async fn status_from(from: Ipv4Addr, to: SocketAddr, ip: &str) -> u16 {
    status_of(&post_from(from, to, ip).await.expect("a reply"))
}

/// `unique_ip_addresses` from the metrics listener, which takes no PROXY header.
async fn counted(app: &TestApp) -> f64 {
    metric_sum(&app.metrics_text().await, "unique_ip_addresses", &[])
}

#[tokio::test]
async fn behind_haproxy_each_client_is_rate_limited_as_itself() {
    let app = TestApp::spawn_with(&["--proxy-protocol=on", "--rate-limit-per-ip=1"]).await;
    let haproxy = Haproxy::start(app.ingest);
    let (a, b) = (Ipv4Addr::new(127, 0, 10, 1), Ipv4Addr::new(127, 0, 10, 2));
    // haproxy's health checks (GET /ready, with a v1 header or a v2 LOCAL one) run every
    // 100 ms; one failure would take the server out, and the requests below would get 503.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Through haproxy every connection comes from 127.0.0.1: were the header ignored, b's
    // first request would be over the limit a used up.
    assert_eq!(status_from(a, haproxy.v1, "192.0.2.1").await, 200, "v1, a");
    assert_eq!(
        status_from(a, haproxy.v1, "192.0.2.2").await,
        429,
        "v1, a again"
    );
    assert_eq!(status_from(b, haproxy.v2, "192.0.2.3").await, 200, "v2, b");
    assert_eq!(
        status_from(b, haproxy.v2, "192.0.2.4").await,
        429,
        "v2, b again"
    );
    assert_eq!(status_from(b, haproxy.v1, "192.0.2.5").await, 429, "v1, b");
    assert_eq!(
        counted(&app).await,
        2.0,
        "the refused entries left no trace"
    );
}

#[tokio::test]
async fn a_connection_without_the_header_is_refused_and_counted() {
    let app = TestApp::spawn_with(&["--proxy-protocol=on"]).await;
    // Straight to the listener, as a stranger would: no header, so no HTTP either.
    let direct = post_from(Ipv4Addr::LOCALHOST, app.ingest, "192.0.2.9").await;
    assert!(
        direct.as_ref().map_or(true, String::is_empty),
        "closed without a reply: {direct:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = app.metrics_text().await;
        let refused = metric_sum(
            &metrics,
            "ipcounter_http_requests_total",
            &[("route", "unparsed"), ("status", "400")],
        );
        if refused == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "refusal not counted: {refused}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted(&app).await, 0.0);
}
