//! Shared test fixtures: [`TestApp`] (the service in-process on port 0, one method per endpoint),
//! [`ServerProcess`] (the real binary), a raw HTTP/1.1 client for what reqwest cannot send, and a
//! small reader for the Prometheus text exposition.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ip_counter::app::App;
use ip_counter::config::Config;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// The exposition content type a Prometheus scraper asks for when it prefers OpenMetrics.
pub const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text; version=1.0.0";

/// Every setting the service reads from the environment, today's and the ones SPEC reserves.
/// Spawned binaries start without any of them so that the caller's shell cannot leak in.
const SETTINGS: &[&str] = &[
    "LOG_PORT",
    "METRICS_PORT",
    "SERVER_HOST",
    "LOG_LEVEL",
    "RUST_LOG",
    "LOG_FORMAT",
    "MAX_BODY_BYTES",
    "MAX_INFLIGHT_BODY_BYTES",
    "DATA_DIR",
    "PERSISTENCE",
    "DURABILITY",
    "FSYNC_INTERVAL",
    "SNAPSHOT_INTERVAL",
    "AUTH_TOKEN",
    "AUTH_TOKEN_FILE",
    "METRICS_AUTH_TOKEN",
    "TLS_CERT",
    "TLS_KEY",
    "METRICS_TLS_CERT",
    "METRICS_TLS_KEY",
    "RATE_LIMIT_PER_IP",
    "REQUEST_TIMEOUT",
    "MAX_CONNECTIONS",
];

/// One HTTP reply, read completely.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// Reads a whole response: status, headers and body.
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("reading the response body");
        Reply {
            status,
            headers,
            text,
        }
    }

    /// Reads a whole response, or `None` when the connection breaks before its end (a killed
    /// server).
    pub async fn read_lossy(response: reqwest::Response) -> Option<Reply> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.ok()?;
        Some(Reply {
            status,
            headers,
            text,
        })
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body {:?}",
                self.status, self.text
            )
        })
    }

    /// The value of a header ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is not text"))
            .unwrap_or("")
    }

    /// The `Content-Type` header ("" when absent).
    pub fn content_type(&self) -> &str {
        self.header("content-type")
    }

    /// Asserts the reply is the SPEC's JSON error with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got {} {:?}",
            self.status, self.text
        );
        assert!(
            self.content_type().starts_with("application/json"),
            "error {code} should be JSON, content-type is {:?}",
            self.content_type()
        );
        let body = self.json();
        assert_eq!(body["status"], "error", "{body}");
        assert_eq!(body["error"], code, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "error needs a human message: {body}");
    }
}

/// An HTTP client that talks only to the given addresses, never through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("building the HTTP client")
}

/// The service built in-process on 127.0.0.1 with both ports chosen by the OS. Dropping it
/// shuts the service down.
pub struct TestApp {
    /// Address of the ingest listener.
    pub ingest: SocketAddr,
    /// Address of the metrics listener.
    pub metrics: SocketAddr,
    /// The client every helper method uses.
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    _data: tempfile::TempDir,
}

impl TestApp {
    /// The service with default settings.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    /// The service with extra flags, e.g. `&["--max-body-bytes=1KiB"]`, and a data directory
    /// of its own, removed on drop.
    pub async fn spawn_with(flags: &[&str]) -> TestApp {
        let data = tempfile::tempdir().expect("temp dir");
        let data_dir = format!("--data-dir={}", data.path().display());
        let args = [
            "ip-counter",
            "--log-port=0",
            "--metrics-port=0",
            "--server-host=127.0.0.1",
            &data_dir,
        ]
        .into_iter()
        .chain(flags.iter().copied());
        let cfg = Config::from_args(args).expect("test settings are valid");
        let app = App::build(cfg).await.expect("binding both listeners");
        let ingest = app.ingest_addr();
        let metrics = app.metrics_addr();
        assert!(ingest.ip().is_loopback() && ingest.port() != 0, "{ingest}");
        assert!(
            metrics.ip().is_loopback() && metrics.port() != 0,
            "{metrics}"
        );
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let app = TestApp {
            ingest,
            metrics,
            client: client(),
            shutdown: Some(tx),
            _data: data,
        };
        // Over TLS the plain client cannot ask; requests wait for recovery anyway.
        if !flags.iter().any(|f| f.starts_with("--tls-cert")) {
            app.wait_ready().await;
        }
        app
    }

    /// Polls `/ready` until it answers 200: the data directory has been read back.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ready().await.status != 200 {
            assert!(
                Instant::now() < deadline,
                "/ready did not turn 200 within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `http://<ingest><path>`.
    pub fn ingest_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingest)
    }

    /// `http://<metrics><path>`.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }

    /// Sends a request built by the caller.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        Reply::read(request.send().await.expect("sending the request")).await
    }

    /// `POST /logs` with a JSON body.
    pub async fn post_log(&self, entry: &Value) -> Reply {
        self.post_raw(Some("application/json"), entry.to_string())
            .await
    }

    /// `POST /logs` of an entry with just this address; asserts 200 and returns the body.
    pub async fn log_ip(&self, ip: &str) -> Value {
        let reply = self
            .post_log(
                &serde_json::json!({"timestamp": "2024-01-01T00:00:00Z", "ip": ip, "url": "/"}),
            )
            .await;
        assert_eq!(reply.status, 200, "posting {ip:?}: {}", reply.text);
        reply.json()
    }

    /// `POST /logs` with any content type (or none) and any body.
    pub async fn post_raw(
        &self,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self.client.post(self.ingest_url("/logs")).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        self.send(request).await
    }

    /// Any method on any path of the ingest listener, without a body.
    pub async fn ingest_request(&self, method: reqwest::Method, path: &str) -> Reply {
        self.send(self.client.request(method, self.ingest_url(path)))
            .await
    }

    /// `GET /health` on the ingest listener.
    pub async fn health(&self) -> Reply {
        self.send(self.client.get(self.ingest_url("/health"))).await
    }

    /// `GET /ready`.
    pub async fn ready(&self) -> Reply {
        self.send(self.client.get(self.ingest_url("/ready"))).await
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Reply {
        self.send(self.client.get(self.ingest_url("/stats"))).await
    }

    /// `GET /stats`, asserted 200, as JSON.
    pub async fn stats_json(&self) -> Value {
        let reply = self.stats().await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()
    }

    /// The distinct count as `/stats` reports it.
    pub async fn unique_count(&self) -> u64 {
        let stats = self.stats_json().await;
        stats["unique_ip_addresses"]
            .as_u64()
            .unwrap_or_else(|| panic!("unique_ip_addresses is not a count: {stats}"))
    }

    /// `GET /metrics` with the client's default `Accept`.
    pub async fn metrics(&self) -> Reply {
        self.send(self.client.get(self.metrics_url("/metrics")))
            .await
    }

    /// `GET /metrics` with this `Accept` header.
    pub async fn metrics_with_accept(&self, accept: &str) -> Reply {
        self.send(
            self.client
                .get(self.metrics_url("/metrics"))
                .header("accept", accept),
        )
        .await
    }

    /// The text exposition, asserted 200.
    pub async fn metrics_text(&self) -> String {
        let reply = self.metrics().await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.text
    }

    /// `GET /health` on the metrics listener.
    pub async fn metrics_health(&self) -> Reply {
        self.send(self.client.get(self.metrics_url("/health")))
            .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A reply read off a raw TCP connection.
#[derive(Debug)]
pub struct RawReply {
    /// Status code from the status line.
    pub status: u16,
    /// Everything the server sent, as text.
    pub text: String,
}

/// Writes `request` (which should say `Connection: close`) to `addr` and reads until the server
/// closes. For requests reqwest cannot make: chunked uploads, partial bodies.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> RawReply {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        std::io::Result::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("raw request timed out")
        .expect("raw request failed");
    let text = String::from_utf8_lossy(&buf).into_owned();
    RawReply {
        status: status_of(&text),
        text,
    }
}

/// The status code of an HTTP/1.x response's status line.
/// The `Content-Length` of a raw reply's head, 0 when it has none.
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

pub fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The path of a system tool the test needs; fails the test (never skips) when it is missing.
pub fn require_tool(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH; this test needs it. Install it with \
                 scripts/install-test-deps.sh (or `apt-get install prometheus`)."
            )
        })
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// `ip-counter` with none of the service's variables inherited, run in `dir`.
pub fn command(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ip-counter"));
    for var in SETTINGS {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Collects a child's stream into a shared string on a background thread.
fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

/// How a run of the binary ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

/// Runs the binary and waits for it to exit by itself; kills it and fails after `timeout`.
pub fn run_to_exit(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = command(dir.path(), args, envs)
        .spawn()
        .expect("starting ip-counter");
    finish(
        child,
        &format!("ip-counter {args:?} with {envs:?}"),
        timeout,
    )
}

/// Runs another program (a test tool) to its exit, with its output captured, in a temporary
/// directory so that whatever it writes (schemathesis keeps a cache) stays out of the repository.
pub fn run_command(program: &std::path::Path, args: &[&str], timeout: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = Command::new(program)
        .current_dir(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    finish(child, &format!("{} {args:?}", program.display()), timeout)
}

/// Waits for `child` (described as `what`) to exit and collects its output; kills it and fails
/// the test after `timeout`.
fn finish(mut child: Child, what: &str, timeout: Duration) -> Finished {
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let status = wait_for(&mut child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} was still running after {timeout:?}\nstdout: {}\nstderr: {}",
            stdout.lock().unwrap(),
            stderr.lock().unwrap()
        )
    });
    // The reader threads finish at EOF, right after exit; give them a moment.
    std::thread::sleep(Duration::from_millis(50));
    let stdout = stdout.lock().unwrap().clone();
    let stderr = stderr.lock().unwrap().clone();
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Polls until the child exits or `timeout` passes.
fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for ip-counter") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address printed after `prefix` on some line of `text`.
fn printed_addr(text: &str, prefix: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let rest = &line[line.find(prefix)? + prefix.len()..];
        rest.split_whitespace()
            .next()?
            .trim_end_matches('/')
            .parse()
            .ok()
    })
}

/// The real `ip-counter` binary, started with ports found from what it prints; killed on drop.
pub struct ServerProcess {
    child: Child,
    /// Address of the ingest listener, as printed.
    pub ingest: SocketAddr,
    /// Address of the metrics listener, as printed.
    pub metrics: SocketAddr,
    /// A client for talking to it.
    pub client: reqwest::Client,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the binary on 127.0.0.1 with both ports 0, plus these flags and variables.
    pub fn start(flags: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
        let mut args = vec![
            "--log-port=0",
            "--metrics-port=0",
            "--server-host=127.0.0.1",
        ];
        args.extend_from_slice(flags);
        ServerProcess::start_exact(&args, envs)
    }

    /// Starts the binary with exactly these flags and variables; waits for both listening lines.
    pub fn start_exact(args: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = command(dir.path(), args, envs)
            .spawn()
            .expect("starting ip-counter");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ingest, metrics) = {
                let out = stdout.lock().unwrap();
                (
                    printed_addr(&out, "ingest listening on http://"),
                    printed_addr(&out, "metrics listening on http://"),
                )
            };
            if let (Some(ingest), Some(metrics)) = (ingest, metrics) {
                return ServerProcess {
                    child,
                    ingest,
                    metrics,
                    client: client(),
                    stdout,
                    stderr,
                    _dir: dir,
                };
            }
            let exited = child.try_wait().expect("waiting for ip-counter");
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "ip-counter {args:?} with {envs:?} did not print both \
                     `ingest listening on http://ADDR` and `metrics listening on http://ADDR` \
                     on stdout (exit: {exited:?})\nstdout: {}\nstderr: {}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://<ingest><path>`.
    pub fn ingest_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingest)
    }

    /// `POST /logs` of one entry with this address; returns the reply.
    pub async fn post_ip(&self, ip: &str) -> Reply {
        let request = self
            .client
            .post(self.ingest_url("/logs"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "ip": ip }).to_string());
        Reply::read(request.send().await.expect("POST /logs")).await
    }

    /// Polls `/ready` until it answers 200 (the data directory has been read back).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.client.get(self.ingest_url("/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/ready did not turn 200 within 30 s\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET /health` on the ingest listener.
    pub async fn health(&self) -> Reply {
        let request = self.client.get(self.ingest_url("/health"));
        Reply::read(request.send().await.expect("GET /health")).await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would end it, and reaps it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `POST /logs` of `lines` as one NDJSON batch of `{"ip":...}` entries; returns the reply.
    pub async fn post_batch(&self, ips: &[String]) -> Reply {
        let body: String = ips
            .iter()
            .map(|ip| format!("{}\n", serde_json::json!({ "ip": ip })))
            .collect();
        let request = self
            .client
            .post(self.ingest_url("/logs"))
            .header("content-type", "application/x-ndjson")
            .body(body);
        Reply::read(request.send().await.expect("POST /logs")).await
    }

    /// The distinct count as `/stats` reports it.
    pub async fn unique_count(&self) -> u64 {
        let request = self.client.get(self.ingest_url("/stats"));
        let reply = Reply::read(request.send().await.expect("GET /stats")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()["unique_ip_addresses"]
            .as_u64()
            .expect("a count")
    }

    /// Sends a signal (`"TERM"`, `"INT"`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits for the process to exit; fails the test with its output after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match wait_for(&mut self.child, timeout) {
            Some(status) => status,
            None => panic!(
                "ip-counter did not exit within {timeout:?}\n{}",
                self.output()
            ),
        }
    }

    /// What the process has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// What the process has written so far, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "stdout: {}\nstderr: {}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text exposition

/// One sample line of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, suffix included (`_total`, `_bucket`, ...).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of one label.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every given label has the given value.
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.label(k) == Some(v))
    }
}

/// Every sample of a text exposition (0.0.4 or OpenMetrics); panics on a malformed line.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("malformed sample line {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &body[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of every sample called `name` that has these labels (0 when there is none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .iter()
        .filter(|s| s.name == name && s.has(labels))
        .map(|s| s.value)
        .sum()
}

/// The value of the one unlabelled sample called `name`; panics when absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    let found: Vec<_> = samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one `{name}` sample, found {found:?} in:\n{text}"
    );
    found[0].value
}

#[test]
fn the_exposition_reader_reads_labels_and_special_values() {
    let text = "# HELP x y\n\
                a 1\n\
                b_total{route=\"/logs\",status=\"200\"} 3 1700000000000\n\
                c_bucket{le=\"+Inf\",q=\"a\\\"b\"} +Inf\n";
    let all = samples(text);
    assert_eq!(all.len(), 3);
    assert_eq!(metric_value(text, "a"), 1.0);
    assert_eq!(metric_sum(text, "b_total", &[("status", "200")]), 3.0);
    assert_eq!(metric_sum(text, "b_total", &[("status", "400")]), 0.0);
    assert_eq!(all[2].label("q"), Some("a\"b"));
    assert!(all[2].value.is_infinite());
    assert_eq!(
        printed_addr(
            "x ingest listening on http://127.0.0.1:4000\n",
            "ingest listening on http://"
        ),
        Some("127.0.0.1:4000".parse().unwrap())
    );
}
