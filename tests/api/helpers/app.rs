//! [`TestApp`]: the service in-process on port 0, with one method per endpoint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ip_counter::app::App;
use ip_counter::config::Config;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Reply, client};

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
        // Over TLS, or behind PROXY headers, the plain client cannot ask; requests wait for
        // recovery anyway.
        if !flags
            .iter()
            .any(|f| f.starts_with("--tls-cert") || f.starts_with("--proxy-protocol"))
        {
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
