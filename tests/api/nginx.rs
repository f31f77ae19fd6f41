//! A real nginx access log: nginx (Debian package) on a free 127.0.0.1 port, requests from
//! several 127.x.y.z source addresses with `curl --interface`, then the log counted by
//! `ip-counter count` and posted as `text/plain`; both must find exactly the addresses used.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{TestApp, free_port, require_tool, run_to_exit};

/// A private nginx, killed on drop. Everything it writes is in its temp dir.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Nginx {
        let binary = nginx_binary();
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
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log {d}/access.log combined;\n\
               client_body_temp_path {d}/client_body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location / {{ return 200 \"ok\\n\"; }}\n\
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
        let output = Command::new(require_tool("curl"))
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--noproxy", "*", "--max-time", "5", "--interface", from])
            .args(["-A", "Mozilla/5.0 (X11; Linux x86_64) \"quoted\" agent"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("running curl");
        let code = String::from_utf8_lossy(&output.stdout);
        assert_eq!(code, "200", "curl from {from}: {output:?}");
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

fn nginx_binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin.to_path_buf();
    }
    require_tool("nginx")
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
