//! The metrics listener: `GET /metrics` (the exposition [`crate::metrics`] encodes, behind
//! `METRICS_AUTH_TOKEN`, held back until recovery is over) and `GET /health`; and the middleware
//! that counts the ingest router's requests.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::ApiError;
use super::state::AppState;
use super::status;
use crate::metrics::{OPENMETRICS_TEXT, PROMETHEUS_TEXT, Route, to_prometheus_text};

/// The metrics listener's router: `GET /metrics` and `GET /health`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(scrape).fallback(|| async { ApiError::MethodNotAllowed("GET, HEAD") }),
        )
        .route(
            "/health",
            get(status::health).fallback(|| async { ApiError::MethodNotAllowed("GET, HEAD") }),
        )
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

async fn scrape(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(tokens) = &state.metrics_tokens
        && !tokens.allow(&headers)
    {
        return ApiError::Unauthorized.into_response();
    }
    if state.counter.wait_recovered().await.is_err() {
        // A partial count would draw a drop on every dashboard; a failed scrape draws a gap.
        return status::not_ready();
    }
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = state.metrics.encode_openmetrics();
    let (content_type, body) = if wants_openmetrics {
        (OPENMETRICS_TEXT, text)
    } else {
        (PROMETHEUS_TEXT, to_prometheus_text(&text))
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// Middleware for the ingest router: counts each request by route and status and times it.
/// Routes are named from a fixed list so that scanners probing random paths cannot create
/// unbounded label values.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = Route::of(request.uri().path());
    let start = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .request_done(route, response.status(), start.elapsed());
    response
}
