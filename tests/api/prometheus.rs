//! A real Prometheus scrapes the metrics listener and sees the count.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{TestApp, client, free_port, require_tool};

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, with its storage in a temp dir.
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let binary = require_tool("prometheus");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ip-counter\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            child,
            url: format!("http://{listen}"),
            dir,
        }
    }

    /// The tail of Prometheus's own log and its view of the target, for failure messages.
    async fn diagnose(&mut self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let targets = match client()
            .get(format!("{}/api/v1/targets", self.url))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => format!("(targets unavailable: {e})"),
        };
        let exited = self.child.try_wait().ok().flatten();
        format!(
            "prometheus exit: {exited:?}\ntargets: {targets}\nlog (last lines, newest first):\n{}",
            tail.join("\n")
        )
    }

    /// The value of an instant query's single sample, if there is one yet.
    async fn query_one(&self, query: &str) -> Option<String> {
        match self.query(query).await?.as_slice() {
            [one] => one["value"][1].as_str().map(str::to_string),
            _ => None,
        }
    }

    /// The samples of an instant query, if it succeeded.
    async fn query(&self, query: &str) -> Option<Vec<Value>> {
        let reply = client()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let body: Value = reply.json().await.ok()?;
        body["data"]["result"].as_array().cloned()
    }

    /// Polls `query` until it returns `expected`; fails with diagnostics after `timeout`.
    async fn wait_for(&mut self, query: &str, expected: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query_one(query).await;
            if last.as_deref() == Some(expected) {
                return;
            }
            assert!(
                self.child.try_wait().ok().flatten().is_none(),
                "prometheus exited early\n{}",
                self.diagnose().await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "Prometheus query {query:?} did not return {expected:?} within {timeout:?} \
             (last: {last:?})\n{}",
            self.diagnose().await
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_unique_ip_gauge() {
    let app = TestApp::spawn().await;
    let mut prometheus = Prometheus::start(app.metrics);

    for i in 1..=7 {
        app.log_ip(&format!("100.64.0.{i}")).await;
    }
    app.log_ip("100.64.0.3").await;
    assert_eq!(app.unique_count().await, 7);
    prometheus
        .wait_for("unique_ip_addresses", "7", Duration::from_secs(30))
        .await;
    prometheus
        .wait_for("up{job=\"ip-counter\"}", "1", Duration::from_secs(5))
        .await;

    // The gauge follows new addresses on the next scrapes.
    app.log_ip("2001:db8::64").await;
    app.log_ip("::ffff:100.64.0.8").await;
    prometheus
        .wait_for("unique_ip_addresses", "9", Duration::from_secs(15))
        .await;
    prometheus
        .wait_for(
            "sum(ipcounter_log_entries_received_total)",
            "10",
            Duration::from_secs(5),
        )
        .await;
}

/// Every query of every panel of the shipped Grafana dashboard, run against a real Prometheus
/// that scrapes the service under a little traffic (entries in every window, rejected ones,
/// persistence on), returns samples, and at least one of them a number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grafana_panel_query_returns_data() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../deploy/grafana/ip-counter.json")).unwrap();
    let queries: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_owned();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect();
    assert!(queries.len() >= 11, "{queries:?}");

    let app = TestApp::spawn().await;
    let mut prometheus = Prometheus::start(app.metrics);
    prometheus
        .wait_for("up{job=\"ip-counter\"}", "1", Duration::from_secs(30))
        .await;
    // Traffic over several scrapes, so that rates and derivatives have two points.
    for round in 0..6u8 {
        for i in 0..20u8 {
            let reply = app
                .post_log(&serde_json::json!({"ip": format!("100.64.{round}.{i}")}))
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
        let reply = app
            .post_log(&serde_json::json!({"ip": "not an address"}))
            .await;
        assert_eq!(reply.status, 400);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending = queries.clone();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (title, expr) in pending {
            let samples = prometheus.query(&expr).await.unwrap_or_default();
            let numeric = samples.iter().any(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            });
            if !numeric {
                still.push((title, expr));
            }
        }
        pending = still;
        if !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "panels without data after 30 s: {pending:?}\n{}",
                prometheus.diagnose().await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
