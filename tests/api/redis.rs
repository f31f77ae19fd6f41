//! `STORE=redis` against a real redis-server (Debian package) on a free 127.0.0.1 port: several
//! instances show the union of what each was sent, windows included; Redis killed mid-load and
//! started again empty loses nothing acknowledged, and no count goes down.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, free_port, require_tool};

/// A private redis-server without persistence, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_on(free_port())
    }

    fn start_on(port: u16) -> Redis {
        let child = Command::new(require_tool("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.command("PING").as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
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
    for app in &apps {
        let took = wait_for(app, Duration::from_secs(3), |s| {
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
}

#[tokio::test]
async fn redis_killed_and_restarted_empty_loses_nothing_acknowledged() {
    let mut redis = Redis::start();
    let port = redis.port;
    let app = instance(&redis, "outage").await;
    post(&app, (0..1_000).map(v4)).await;
    wait_for(&app, Duration::from_secs(3), |s| {
        s["unique_ip_addresses"] == 1_000 && s["shared"]["backlog"] == 0
    })
    .await;

    redis.kill();
    // Acknowledged while Redis is away, and counted locally.
    post(&app, (1_000..1_500).map(v4)).await;
    wait_for(&app, Duration::from_secs(5), |s| {
        s["shared"]["status"] == "degraded"
            && s["shared"]["backlog"].as_u64() >= Some(1)
            && s["unique_ip_addresses"] == 1_500
    })
    .await;
    let text = app.metrics_text().await;
    assert!(text.contains("\nipcounter_redis_up 0\n"), "{text}");

    // Back, with nothing in it: the instance sends its whole set again.
    let redis = Redis::start_on(port);
    let last = std::cell::Cell::new(1_500);
    wait_for(&app, Duration::from_secs(10), |s| {
        let now = s["unique_ip_addresses"].as_u64().unwrap();
        assert!(
            now >= last.get(),
            "the count went down: {} -> {now}",
            last.get()
        );
        last.set(now);
        s["shared"]["status"] == "ok" && s["shared"]["backlog"] == 0
    })
    .await;
    assert_eq!(app.unique_count().await, 1_500);
    // A new instance with an empty data directory sees Redis's count: all of it.
    let fresh = instance(&redis, "outage").await;
    wait_for(&fresh, Duration::from_secs(3), |s| {
        s["unique_ip_addresses"] == 1_500
    })
    .await;
    assert_eq!(
        redis
            .command("ZCARD {outage:0}:4")
            .map(|r| r.starts_with(':')),
        Some(true),
        "keys are where the docs say"
    );
}
