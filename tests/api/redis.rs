//! `STORE=redis` against a real redis-server (Debian package) on free 127.0.0.1 ports: several
//! instances show the union of what each was sent, windows included, on one Redis and on a
//! three-node Redis Cluster; Redis killed mid-load and started again empty loses nothing
//! acknowledged, and no count goes down; a password and TLS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Reply, ServerProcess, TestApp, free_port, require_tool, run_command};

/// A private redis-server without persistence, killed on drop.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// On `port`, with more `args` (`--requirepass`, TLS); PING is sent without a password.
    fn start_with(port: u16, args: &[&str]) -> Redis {
        let child = Command::new(require_tool("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis
            .command("PING")
            .is_some_and(|r| r == "+PONG" || r.starts_with("-NOAUTH"))
        {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// An inline command's first reply line, `None` when Redis is not there.
    fn command(&self, command: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut con = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        con.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        con.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut buf = [0; 512];
        let n = con.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.lines().next().map(str::to_owned)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn instance(redis: &Redis, prefix: &str) -> TestApp {
    let url = format!("--redis-url={}", redis.url());
    let prefix = format!("--redis-key-prefix={prefix}");
    TestApp::spawn_with(&["--store=redis", &url, &prefix]).await
}

/// Posts `ips` as one NDJSON batch timestamped now; asserts 200.
async fn post(app: &TestApp, ips: impl Iterator<Item = String>) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let body: String = ips
        .map(|ip| format!("{}\n", json!({"timestamp": now, "ip": ip, "url": "/"})))
        .collect();
    let reply = app
        .send(
            app.client
                .post(app.ingest_url("/logs"))
                .header("content-type", "application/x-ndjson")
                .body(body),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

fn v4(i: u32) -> String {
    format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)
}

/// Polls `/stats` until `done` holds, for at most `within`; returns the last stats and when
/// they first held.
async fn wait_for(app: &TestApp, within: Duration, done: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let stats = app.stats_json().await;
        if done(&stats) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "not within {within:?}: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn three_instances_show_the_union_windows_included() {
    let redis = Redis::start();
    let apps = [
        instance(&redis, "union").await,
        instance(&redis, "union").await,
        instance(&redis, "union").await,
    ];
    // Instance k gets 0..200 shifted by 100 k: 400 distinct, most seen by two instances.
    for (k, app) in (0u32..).zip(&apps) {
        post(app, (100 * k..100 * k + 200).map(v4)).await;
    }
    post(
        &apps[0],
        ["2001:db8::1".to_owned(), "2001:db8::2".to_owned()].into_iter(),
    )
    .await;
    // SPEC: every instance's count is at most 1 s old.
    for app in &apps {
        let took = wait_for(app, Duration::from_secs(1), |s| {
            s["unique_ip_addresses"] == 402
                && s["unique_ipv6"] == 2
                && s["windows"]["5m"] == 402
                && s["windows"]["24h"] == 402
                && s["shared"]["status"] == "ok"
        })
        .await;
        eprintln!("the union reached an instance within {took:?}");
    }
    let text = apps[1].metrics_text().await;
    assert!(text.contains("\nipcounter_redis_up 1\n"), "{text}");
    assert!(text.contains("\nunique_ip_addresses 402\n"), "{text}");
    assert!(
        text.contains("# HELP unique_ip_addresses Total number of unique IP addresses seen by every instance sharing this Redis key prefix"),
        "{text}"
    );
}

/// NDJSON batches of 50 new addresses posted back to back until `stop`; returns how many
/// batches were acknowledged (200), which hold addresses `0..50 * n`: a batch that was not
/// would be a failure, since Redis being away must not refuse anything.
fn load(app: &TestApp, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<u32> {
    let (client, url) = (app.client.clone(), app.ingest_url("/logs"));
    tokio::spawn(async move {
        let mut batches = 0u32;
        while !*stop.borrow() {
            let body: String = (50 * batches..50 * (batches + 1))
                .map(|i| format!("{}\n", json!({"ip": v4(i)})))
                .collect();
            let reply = client
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .expect("POST /logs");
            assert_eq!(
                reply.status(),
                200,
                "batch {batches} refused while Redis was away"
            );
            batches += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        batches
    })
}

#[tokio::test]
async fn redis_killed_and_restarted_empty_mid_load_loses_nothing_acknowledged() {
    let mut redis = Redis::start();
    let port = redis.port;
    let app = instance(&redis, "outage").await;
    // The count, polled throughout until `done`: it must never go down.
    let (done, watched) = tokio::sync::watch::channel(false);
    let watching = {
        let (client, url) = (app.client.clone(), app.ingest_url("/stats"));
        tokio::spawn(async move {
            let (mut last, mut polls) = (0, 0u32);
            while !*watched.borrow() {
                let stats: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                let now = stats["unique_ip_addresses"].as_u64().unwrap();
                assert!(now >= last, "the count went down: {last} -> {now}");
                (last, polls) = (now, polls + 1);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            polls
        })
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loading = load(&app, stopped);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = app.metrics_text().await;
    assert!(text.contains("\nipcounter_redis_up 0\n"), "{text}");
    let stats = app.stats_json().await;
    assert_eq!(stats["shared"]["status"], "degraded", "{stats}");
    assert!(stats["shared"]["backlog"].as_u64() > Some(0), "{stats}");

    // Back, with nothing in it, while the load goes on: the instance sends its whole set again.
    let redis = Redis::start_on(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let acknowledged = u64::from(loading.await.unwrap()) * 50;
    assert!(acknowledged > 1_000, "the load ran: {acknowledged}");
    let caught_up = wait_for(&app, Duration::from_secs(10), |s| {
        s["unique_ip_addresses"] == acknowledged
            && s["shared"]["status"] == "ok"
            && s["shared"]["backlog"] == 0
    })
    .await;
    eprintln!(
        "{acknowledged} addresses acknowledged; Redis caught up {caught_up:?} after the load"
    );
    // A new instance with an empty data directory sees Redis's count: every acknowledged one.
    let fresh = instance(&redis, "outage").await;
    wait_for(&fresh, Duration::from_secs(3), |s| {
        s["unique_ip_addresses"] == acknowledged
    })
    .await;
    assert_eq!(
        redis
            .command("ZCARD {outage:0}:4")
            .map(|r| r.starts_with(':')),
        Some(true),
        "keys are where the docs say"
    );
    done.send(true).unwrap();
    let polls = watching.await.unwrap();
    assert!(
        polls > 50,
        "the count was watched throughout: {polls} polls"
    );
}

#[tokio::test]
async fn a_password_in_the_url_is_used_and_a_wrong_one_only_degrades() {
    let redis = Redis::start_with(free_port(), &["--requirepass", "s3cret"]);
    let good = format!("--redis-url=redis://:s3cret@127.0.0.1:{}", redis.port);
    let app = TestApp::spawn_with(&["--store=redis", &good, "--redis-key-prefix=auth"]).await;
    post(&app, (0..10).map(v4)).await;
    wait_for(&app, Duration::from_secs(3), |s| {
        s["shared"]["status"] == "ok" && s["shared"]["backlog"] == 0
    })
    .await;
    assert_eq!(
        redis
            .command("ZCARD {auth:0}:4")
            .as_deref()
            .map(|r| r.starts_with("-NOAUTH")),
        Some(true),
        "the server really wants the password"
    );

    let bad = format!("--redis-url=redis://:wrong@127.0.0.1:{}", redis.port);
    let refused = TestApp::spawn_with(&["--store=redis", &bad]).await;
    post(&refused, (0..5).map(v4)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = refused.stats_json().await;
    assert_eq!(stats["shared"]["status"], "degraded", "{stats}");
    assert_eq!(
        stats["unique_ip_addresses"], 5,
        "counted locally all the same"
    );
}

/// rediss:// to a redis-server with a test certificate, trusted through `SSL_CERT_FILE`; the
/// same Redis's plain port shows what went over TLS.
#[tokio::test]
async fn rediss_verifies_the_certificate_and_shares_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let tls_port = free_port();
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let redis = Redis::start_with(
        free_port(),
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert_s,
            "--tls-key-file",
            &key_s,
            "--tls-ca-cert-file",
            &cert_s,
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("--redis-url=rediss://127.0.0.1:{tls_port}");
    let flags = ["--store=redis", url.as_str(), "--redis-key-prefix=tls"];
    let over_tls = ServerProcess::start(&flags, &[("SSL_CERT_FILE", cert_s.as_str())]);
    over_tls.wait_ready().await;
    let ips: Vec<String> = (0..50).map(v4).collect();
    assert_eq!(over_tls.post_batch(&ips).await.status, 200);
    let plain = instance(&redis, "tls").await;
    wait_for(&plain, Duration::from_secs(5), |s| {
        s["unique_ip_addresses"] == 50
    })
    .await;

    // Without the certificate trusted, the same URL never links up.
    let untrusted = ServerProcess::start(&flags, &[("SSL_CERT_FILE", "/nonexistent")]);
    untrusted.wait_ready().await;
    assert_eq!(untrusted.post_batch(&ips).await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = untrusted
        .client
        .get(untrusted.ingest_url("/stats"))
        .send()
        .await
        .unwrap();
    let stats = Reply::read(stats).await.json();
    assert_eq!(stats["shared"]["status"], "degraded", "{stats}");
}

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A three-node Redis Cluster made with `redis-cli --cluster create`, as its docs make one.
#[tokio::test]
async fn a_redis_cluster_shows_the_union_too() {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<Redis> = (0..3)
        .map(|i| {
            let port = cluster_port();
            let conf = dir
                .path()
                .join(format!("nodes-{i}.conf"))
                .display()
                .to_string();
            Redis::start_with(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let cli = require_tool("redis-cli");
    let created = run_command(&cli, &create, Duration::from_secs(30));
    assert!(
        created.status.success(),
        "redis-cli --cluster create: {}{}",
        created.stdout,
        created.stderr
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    for node in &nodes {
        loop {
            let port = node.port.to_string();
            let info = run_command(
                &cli,
                &["-p", &port, "cluster", "info"],
                Duration::from_secs(5),
            );
            if info.stdout.contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not turn ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Two seeds of three, as a user would list a few.
    let seeds = format!("--redis-url=redis://{},redis://{}", addrs[0], addrs[1]);
    let flags = ["--store=redis", seeds.as_str(), "--redis-key-prefix=cl"];
    let (a, b) = (
        TestApp::spawn_with(&flags).await,
        TestApp::spawn_with(&flags).await,
    );
    post(&a, (0..300).map(v4)).await;
    post(&b, (200..500).map(v4)).await;
    post(&b, ["2001:db8::7".to_owned()].into_iter()).await;
    for app in [&a, &b] {
        wait_for(app, Duration::from_secs(5), |s| {
            s["unique_ip_addresses"] == 501
                && s["windows"]["1h"] == 501
                && s["shared"]["status"] == "ok"
        })
        .await;
    }
}
