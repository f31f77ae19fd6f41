//! The ingest listener's status routes: `GET /health` (also on the metrics listener), `/ready`,
//! `/stats` and `/openapi.json`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::state::AppState;

#[derive(Serialize)]
struct Health {
    status: &'static str,
    unique_ip_count: u64,
    uptime: String,
    version: &'static str,
}

/// `GET /health`: liveness with the current count; served on both listeners.
pub async fn health(State(state): State<Arc<AppState>>) -> Json<impl Serialize> {
    Json(Health {
        status: "healthy",
        unique_ip_count: state.counter.counts().total(),
        uptime: format!("{}s", state.started.elapsed().as_secs()),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /ready`: 200 while writes are accepted; 503 while starting, shutting down, or while the
/// data directory refuses new addresses (a failed sync until its repair, the directory gone).
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if !state.stopping.load(Ordering::Relaxed) && state.counter.writable() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        not_ready()
    }
}

/// 503 `{"status":"not_ready"}`: starting (recovery not finished) or shutting down.
pub fn not_ready() -> Response {
    let body = Json(serde_json::json!({"status": "not_ready"}));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of this listener, kept true by
/// `tests/api/openapi.rs` and by schemathesis in the test suite.
pub async fn openapi() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        include_str!("openapi.json"),
    )
}

#[derive(Serialize)]
struct Stats {
    unique_ip_addresses: u64,
    unique_ipv4: u64,
    unique_ipv6: u64,
    /// Each window's count by its label, in `WINDOWS`' order; empty with windows off.
    windows: Windows,
    estimated_memory_usage_bytes: usize,
    uptime_seconds: u64,
    /// `exact` or `approx`.
    mode: &'static str,
    /// 0 when exact.
    relative_standard_error: f64,
    /// With `STORE=redis` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<SharedStatus>,
}

/// The shared store's state: `ok`, or `degraded` while Redis cannot be reached, and the
/// changes it has not been sent yet.
#[derive(Serialize)]
struct SharedStatus {
    status: &'static str,
    backlog: u64,
}

/// Window counts as a JSON object, shortest window first.
struct Windows(Vec<(String, u64)>);

impl Serialize for Windows {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (label, n) in &self.0 {
            map.serialize_entry(label, n)?;
        }
        map.end()
    }
}

/// `GET /stats`: the counts, the counting structures' size and the uptime.
pub async fn stats(State(state): State<Arc<AppState>>) -> Json<impl Serialize> {
    let counts = state.counter.counts();
    Json(Stats {
        unique_ip_addresses: counts.total(),
        unique_ipv4: counts.ipv4,
        unique_ipv6: counts.ipv6,
        windows: Windows(state.counter.windows()),
        estimated_memory_usage_bytes: state.counter.memory_bytes(),
        uptime_seconds: state.started.elapsed().as_secs(),
        mode: state.counter.mode().0,
        relative_standard_error: state.counter.mode().1,
        shared: state
            .counter
            .shared_status()
            .map(|(up, backlog)| SharedStatus {
                status: if up { "ok" } else { "degraded" },
                backlog,
            }),
    })
}
