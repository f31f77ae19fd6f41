//! A real nginx (Debian package) on a free 127.0.0.1 port, with requests from many 127.x.y.z
//! source addresses (`curl --interface`): its access log counted by `ip-counter count` and posted
//! as `text/plain`, and the shipped `deploy/nginx/` mirror config feeding a running service; both
//! must find exactly the addresses used.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, free_port, metric_sum, require_tool, run_to_exit};

/// A private nginx, killed on drop. Everything it writes is in its temp dir.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Nginx {
        Nginx::start_with("", "")
    }

    /// nginx with `http` added to its `http { }` block and `server` to its one `server { }`.
    fn start_with(http: &str, server: &str) -> Nginx {
        let binary = require_tool("nginx");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        // One process (master_process off), so killing the child stops everything; no `user`:
        // it runs as whoever runs the tests.
        let config = format!(
            "master_process off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log {d}/access.log combined;\n\
               client_body_temp_path {d}/client_body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               {http}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{ empty_gif; }}\n\
                 {server}\n\
               }}\n\
             }}\n"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx");
        let mut nginx = Nginx { child, port, dir };
        nginx.wait_listening();
        nginx
    }

    fn wait_listening(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let exited = self.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "nginx did not start listening on {addr} (exit: {exited:?}); error.log:\n{}",
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn access_log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// `GET path` from source address `from`, with curl; asserts a 200.
    fn get_from(&self, from: &str, path: &str) {
        self.get_with(from, path, &[]);
    }

    /// `GET path` from `from` with extra curl arguments; asserts a 200.
    fn get_with(&self, from: &str, path: &str, extra: &[&str]) {
        let output = Command::new(require_tool("curl"))
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--path-as-is",
            ])
            .args(["--noproxy", "*", "--max-time", "5", "--interface", from])
            .args(["-A", "Mozilla/5.0 (X11; Linux x86_64) \"quoted\" agent"])
            .args(extra)
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("running curl");
        let code = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            code,
            "200",
            "curl from {from}: {output:?}; nginx error.log:\n{}",
            self.error_log()
        );
    }

    /// `GET target` from source address `from` on a raw connection, the request target sent
    /// byte for byte (curl would percent-encode a byte that is not UTF-8); asserts a 200.
    async fn get_raw(&self, from: Ipv4Addr, target: &[u8]) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        let mut conn = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], self.port)))
            .await
            .unwrap();
        let request = [
            b"GET ".as_slice(),
            target,
            b" HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: a \"quoted\" agent\r\n",
            b"Connection: close\r\n\r\n",
        ]
        .concat();
        conn.write_all(&request).await.unwrap();
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("HTTP/1.1 200 "),
            "from {from}: {reply}; nginx error.log:\n{}",
            self.error_log()
        );
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Waits until the access log has `n` lines (nginx writes each after the response).
    fn wait_for_lines(&self, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = std::fs::read_to_string(self.access_log()).unwrap_or_default();
            if log.lines().count() >= n || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_nginx_access_log_is_counted_exactly() {
    let nginx = Nginx::start();
    // Eight distinct sources, some seen several times; all on the loopback network.
    let sources: &[(&str, usize)] = &[
        ("127.0.0.1", 2),
        ("127.0.0.2", 1),
        ("127.0.0.3", 3),
        ("127.0.0.7", 1),
        ("127.0.1.7", 2),
        ("127.1.0.1", 1),
        ("127.10.20.30", 1),
        ("127.255.255.254", 1),
    ];
    let mut requests = 0;
    for (i, &(from, times)) in sources.iter().enumerate() {
        for t in 0..times {
            nginx.get_from(from, &format!("/page/{i}/{t}?q=a%20b"));
            requests += 1;
        }
    }
    let log = nginx.wait_for_lines(requests);
    assert_eq!(log.lines().count(), requests, "{log}");
    assert!(log.contains("127.10.20.30 - - ["), "combined format: {log}");

    let path = nginx.access_log();
    let run = run_to_exit(
        &["count", "--json", path.to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(summary["total"], sources.len(), "{summary}\n{log}");
    assert_eq!(summary["lines"], requests, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");

    let app = TestApp::spawn().await;
    let reply = app.post_raw(Some("text/plain"), log.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["accepted"], requests, "{body}");
    assert_eq!(body["rejected"], 0, "{body}");
    assert_eq!(body["unique_ips"], sources.len(), "{body}");
}

/// The shipped `deploy/nginx/` files, with the upstream pointed at `upstream` instead of
/// 127.0.0.1:5000: what goes in nginx's `http { }` and what goes in its `server { }`.
fn shipped_mirror_config(upstream: SocketAddr) -> (String, String) {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx");
    let shipped = std::fs::read_to_string(deploy.join("ip-counter-upstream.conf")).unwrap();
    assert!(shipped.contains("server 127.0.0.1:5000;"), "{shipped}");
    let http = shipped.replace("127.0.0.1:5000", &upstream.to_string());
    let server = format!("include {};", deploy.join("mirror.conf").display());
    (http, server)
}

/// Request paths a real site sees, hostile ones included: raw quotes and backslashes (which
/// would break a JSON body built from the URI), a byte that is not UTF-8, a long query string.
fn hostile_path(i: usize) -> Vec<u8> {
    match i % 4 {
        0 => format!("/page/{i}?q=a%20b").into_bytes(),
        1 => format!("/say/\"{i}\"?x=\"y\"&z=\\").into_bytes(),
        2 => [b"/bytes/\xff\xfe/".as_slice(), i.to_string().as_bytes()].concat(),
        _ => format!("/long?{}", "q=very-long-value&".repeat(300)).into_bytes(),
    }
}

#[tokio::test]
async fn the_shipped_mirror_config_counts_every_visitor_exactly() {
    let app = TestApp::spawn().await;
    let (http, server) = shipped_mirror_config(app.ingest);
    let nginx = Nginx::start_with(&http, &server);

    // 300 distinct visitors on the loopback network, each with two requests, 20 at a time.
    let sources: Vec<Ipv4Addr> = (0..300u16)
        .map(|i| {
            Ipv4Addr::new(
                127,
                1 + (i / 200) as u8,
                (i % 200 / 10) as u8,
                1 + (i % 10) as u8,
            )
        })
        .collect();
    let nginx = std::sync::Arc::new(nginx);
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..20 {
        let (nginx, sources) = (nginx.clone(), sources.clone());
        lanes.spawn(async move {
            for (i, &from) in sources.iter().enumerate().skip(lane).step_by(20) {
                nginx.get_raw(from, &hostile_path(i)).await;
                nginx.get_raw(from, &hostile_path(i + 1)).await;
            }
        });
    }
    while let Some(lane) = lanes.join_next().await {
        lane.unwrap();
    }
    let requests = 2 * sources.len();
    let log = nginx.wait_for_lines(requests);
    assert_eq!(log.lines().count(), requests, "every visit reached nginx");

    // The mirror posts in the background: wait for its copies, then for any strays.
    let deadline = Instant::now() + Duration::from_secs(10);
    let received = || async {
        let text = app.metrics_text().await;
        metric_sum(&text, "ipcounter_log_entries_received_total", &[])
    };
    while received().await < requests as f64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = app.metrics_text().await;
    assert_eq!(
        metric_sum(&text, "ipcounter_log_entries_received_total", &[]),
        requests as f64,
        "one POST per visit, no more; nginx error.log:\n{}",
        nginx.error_log()
    );
    assert_eq!(
        metric_sum(&text, "ipcounter_log_entries_rejected_total", &[]),
        0.0
    );
    assert_eq!(app.unique_count().await, sources.len() as u64);
    // Counted at the visit's time, so in the windows too.
    assert_eq!(
        metric_sum(&text, "unique_ip_addresses_window", &[("window", "5m")]),
        sources.len() as f64
    );
}

/// A stand-in for a slow ip-counter: records the one request it gets and answers it only after
/// `delay`. Not a substitute for the real service (the test above is that): it shows what
/// nginx sends and that the visitor does not wait.
fn slow_recorder(delay: Duration) -> (SocketAddr, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "nginx sent no mirror request");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut request = Vec::new();
        let mut buf = [0; 4096];
        let complete = |r: &[u8]| {
            let text = String::from_utf8_lossy(r);
            text.split_once("\r\n\r\n")
                .is_some_and(|(head, body)| body.len() >= crate::helpers::content_length(head))
        };
        while !complete(&request) {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "nginx closed before a whole request");
            request.extend_from_slice(&buf[..n]);
        }
        std::thread::sleep(delay);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        String::from_utf8(request).unwrap()
    });
    (addr, handle)
}

#[tokio::test]
async fn the_mirror_sends_only_the_address_and_time_and_never_delays_the_visitor() {
    let (recorder, request) = slow_recorder(Duration::from_secs(3));
    let (http, server) = shipped_mirror_config(recorder);
    let nginx = Nginx::start_with(&http, &server);

    let started = Instant::now();
    nginx.get_with(
        "127.0.0.9",
        "/private/path?token=secret-query",
        &[
            "-H",
            "Cookie: session=secret-cookie",
            "-H",
            "Authorization: Basic c2VjcmV0",
        ],
    );
    let visit = started.elapsed();
    let request = tokio::task::spawn_blocking(move || request.join().unwrap())
        .await
        .unwrap();

    assert!(
        visit < Duration::from_secs(1),
        "the visitor waited {visit:?} for the mirror"
    );
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /logs HTTP/1.1\r\n"), "{head}");
    assert!(
        !request.contains("secret"),
        "the visitor's request leaked: {request}"
    );
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(": ")
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.to_owned())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/json"),
        "{head}"
    );
    let entry: serde_json::Value = serde_json::from_str(body).unwrap();
    let fields: Vec<&str> = entry
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["ip", "timestamp"], "{body}");
    assert_eq!(entry["ip"], "127.0.0.9");
    let timestamp = entry["timestamp"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{timestamp}"
    );
}
