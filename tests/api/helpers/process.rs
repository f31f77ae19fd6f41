//! The real binary: [`ServerProcess`] (started with its ports printed, killed on drop), runs to
//! exit, and the system tools the tests need.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Reply, client};

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
    "WINDOWS",
    "MAX_CLOCK_SKEW",
    "COUNT_MODE",
    "HLL_PRECISION",
    "MEMORY_BUDGET",
    "STORE",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
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
    "PROXY_PROTOCOL",
];

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The path of a system tool the test needs, on PATH or in /usr/sbin (nginx, haproxy and
/// syslog-ng live there, off an ordinary user's PATH); fails the test (never skips) when it is
/// missing.
pub fn require_tool(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
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
/// Waits for `child` (started with its output piped) to exit, collecting its output; kills it
/// and fails after `timeout`.
pub fn finish(mut child: Child, what: &str, timeout: Duration) -> Finished {
    let read_all = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let status = wait_for(&mut child, timeout);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} was still running after {timeout:?}\nstdout: {}\nstderr: {}",
            stdout.join().unwrap_or_default(),
            stderr.join().unwrap_or_default()
        )
    };
    // The readers end at EOF, once the child has exited: all it wrote is read.
    Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
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

    /// `GET /metrics` on the metrics listener, as text.
    pub async fn metrics_text(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics);
        let reply = self.client.get(url).send().await.expect("GET /metrics");
        reply.text().await.expect("a text exposition")
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

#[test]
fn the_listening_lines_are_read() {
    assert_eq!(
        printed_addr(
            "x ingest listening on http://127.0.0.1:4000\n",
            "ingest listening on http://"
        ),
        Some("127.0.0.1:4000".parse().unwrap())
    );
}
