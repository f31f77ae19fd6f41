//! The ingest listener: its router and thin handlers for `POST /logs`, `GET /health`,
//! `GET /ready` and `GET /stats`, and the state they share.
//!
//! A handler reads the body under the size limit, hands the bytes to [`crate::parse`], counts
//! the address in the [`Store`] and answers; every refusal is an [`ApiError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;

use crate::error::ApiError;
use crate::metrics::{self, Metrics};
use crate::parse;
use crate::store::Store;

/// What every handler on both listeners shares.
#[derive(Debug)]
pub struct AppState {
    /// The distinct addresses.
    pub store: Arc<Store>,
    /// Instruments and the exposition.
    pub metrics: Metrics,
    /// Largest accepted body in bytes.
    pub max_body_bytes: u64,
    started: Instant,
    ready: AtomicBool,
}

impl AppState {
    /// State around an empty store; not ready until [`set_ready`](Self::set_ready).
    pub fn new(store: Store, max_body_bytes: u64) -> Self {
        let store = Arc::new(store);
        AppState {
            metrics: Metrics::new(store.clone()),
            store,
            max_body_bytes,
            started: Instant::now(),
            ready: AtomicBool::new(false),
        }
    }

    /// Whether `/ready` answers 200.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// The ingest listener's router.
pub fn router(state: Arc<AppState>) -> Router {
    let get_only = || async { ApiError::MethodNotAllowed("GET, HEAD") };
    Router::new()
        .route(
            "/logs",
            post(post_logs).fallback(|| async { ApiError::MethodNotAllowed("POST") }),
        )
        .route("/health", get(health).fallback(get_only))
        .route("/ready", get(ready).fallback(get_only))
        .route("/stats", get(stats).fallback(get_only))
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

#[derive(Serialize)]
struct Logged {
    status: &'static str,
    message: &'static str,
    unique_ips: u64,
}

async fn post_logs(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Json<Logged>, ApiError> {
    state.metrics.entries_received(1);
    let result = log_one(&state, request).await;
    if let Err(e) = &result {
        state.metrics.entries_rejected(e.code(), 1);
    }
    result
}

async fn log_one(state: &AppState, request: Request) -> Result<Json<Logged>, ApiError> {
    let (parts, body) = request.into_parts();
    check_content_type(&parts.headers)?;
    let bytes = read_body(body, &parts.headers, state.max_body_bytes).await?;
    let entry = parse::parse_entry(&bytes)?;
    let new = state.store.insert(entry.ip);
    Ok(Json(Logged {
        status: "success",
        message: if new {
            "New IP logged"
        } else {
            "IP already seen"
        },
        unique_ips: state.store.counts().total(),
    }))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes());
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    if media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            String::from_utf8_lossy(value).into_owned(),
        ))
    }
}

/// Reads the whole body, refusing it as soon as it is known to exceed `limit`: at once from a
/// `Content-Length` header, or while streaming a chunked one.
async fn read_body(body: Body, headers: &HeaderMap, limit: u64) -> Result<Bytes, ApiError> {
    let too_large = ApiError::BodyTooLarge { limit };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large),
        Err(e) => Err(ApiError::BodyUnreadable(e.to_string())),
    }
}

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
        unique_ip_count: state.store.counts().total(),
        uptime: format!("{}s", state.started.elapsed().as_secs()),
        version: env!("CARGO_PKG_VERSION"),
    })
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let body = Json(serde_json::json!({"status": "not_ready"}));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

#[derive(Serialize)]
struct Stats {
    unique_ip_addresses: u64,
    unique_ipv4: u64,
    unique_ipv6: u64,
    estimated_memory_usage_bytes: usize,
    uptime_seconds: u64,
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<impl Serialize> {
    let counts = state.store.counts();
    Json(Stats {
        unique_ip_addresses: counts.total(),
        unique_ipv4: counts.ipv4,
        unique_ipv6: counts.ipv6,
        estimated_memory_usage_bytes: state.store.memory_bytes(),
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}
