//! `POST /logs` and the ingest listener's request path: [`handle`] takes every request,
//! dispatching `POST /logs` here and the rest to the [`router`] ([`super::status`]).
//!
//! `POST /logs` checks the head (rate limit, token, body type and encoding), reads the body
//! ([`super::body`]), hands the bytes to [`crate::parse`] (one entry) or [`crate::batch`]
//! (many), records the entries in the [`crate::counter::Counter`], waits for them to settle
//! (as durable as `DURABILITY` promises), and answers; every refusal is an [`ApiError`], with
//! `Connection: close` when it leaves the body unread. It also tells the connection when a
//! request's body has arrived ([`RequestPhase`]), which is what shutdown waits for.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router, middleware};
use serde::Serialize;

use super::body::{BodyType, Held, body_type, close, gzip_limit, is_gzip, read_body, unread};
use super::error::ApiError;
use super::server::{Phase, RequestPhase};
use super::state::AppState;
use super::{scrape, status};
use crate::batch::{self, BatchFormat, Counted, LineError};
use crate::metrics::{self};
use crate::parse::{self, EntryError};

/// The ingest listener's router, for every request but `POST /logs`, which [`handle`] takes
/// before routing (so the router answers any other method on `/logs` with 405).
pub fn router(state: Arc<AppState>) -> Router {
    let get_only = || async { ApiError::MethodNotAllowed("GET, HEAD") };
    Router::new()
        .route(
            "/logs",
            any(|| async { ApiError::MethodNotAllowed("POST") }),
        )
        .route("/health", get(status::health).fallback(get_only))
        .route("/ready", get(status::ready).fallback(get_only))
        .route("/stats", get(status::stats).fallback(get_only))
        .route("/openapi.json", get(status::openapi).fallback(get_only))
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(state.clone(), scrape::track))
        .with_state(state)
}

/// The ingest listener as a hyper service for one connection from `client`: [`handle`] for
/// each request; `router` is [`router`]'s, built once.
pub fn service(
    state: Arc<AppState>,
    router: Router,
    client: IpAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let response = handle(state.clone(), router.clone(), client, request);
        async move { Ok(response.await) }
    })
}

/// One request to the ingest listener from `client`, the path every request takes, in the
/// service and in tests alike. `POST /logs` is dispatched here, before the router, whose
/// routing and boxing cost more than parsing and counting the entry (docs/DESIGN.md, "HTTP").
/// Every other request goes through `router` and its tracking middleware.
pub async fn handle<B>(
    state: Arc<AppState>,
    router: Router,
    client: IpAddr,
    request: hyper::Request<B>,
) -> Response
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if request.method() != axum::http::Method::POST || request.uri().path() != "/logs" {
        // No other route reads a body: one sent anyway is left unread.
        let unread = !hyper::body::Body::is_end_stream(request.body());
        let response = match tower::ServiceExt::oneshot(router, request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        return if unread { close(response) } else { response };
    }
    let start = Instant::now();
    let response = post_logs(state.clone(), client, request).await;
    let route = metrics::Route::of("/logs");
    state
        .metrics
        .request_done(route, response.status(), start.elapsed());
    response
}

#[derive(Serialize)]
struct BatchLogged {
    status: &'static str,
    accepted: u64,
    rejected: u64,
    new_ips: u64,
    unique_ips: u64,
    errors: Vec<LineError>,
}

/// `POST /logs` from `client`: one JSON entry, or a
/// batch (NDJSON, a JSON array, access-log text), each optionally gzip-encoded. Metrics count
/// every entry of a batch; a request refused as a whole counts as one rejected entry.
///
/// A refusal that leaves the body unread either reads and discards it (a known length up to
/// [`DRAIN_MAX_BYTES`]) or says `Connection: close`, so that a keep-alive client is never cut
/// off by a close it was not told of.
async fn post_logs<B>(state: Arc<AppState>, client: IpAddr, request: hyper::Request<B>) -> Response
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = request.into_parts();
    let (body_type, gzip) = match admit(&state, client, &parts.headers).await {
        Ok(admitted) => admitted,
        Err(e) => {
            let response = rejected(&state, e);
            return unread(body, response, state.request_timeout).await;
        }
    };
    let limit = if gzip {
        gzip_limit(state.max_body_bytes)
    } else {
        state.max_body_bytes
    };
    // A known length is refused, or held against MAX_INFLIGHT_BODY_BYTES, before reading.
    let hint = body.size_hint();
    if hint.lower() > limit {
        // Read and dropped when that is cheap: a client still sending it would otherwise see
        // the connection reset before it reads the 413.
        let response = rejected(&state, ApiError::BodyTooLarge { limit });
        return unread(body, response, state.request_timeout).await;
    }
    let held = match state.body_budget.reserve(hint.exact().unwrap_or(0)).await {
        Ok(held) => held,
        Err(e) => return unread(body, rejected(&state, e), state.request_timeout).await,
    };
    let mut read = pin!(read_body(body, limit, held, &state.body_budget));
    let received = match poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        // Already received, as a single entry usually is: no timer to arm.
        Poll::Ready(received) => received,
        Poll::Pending => tokio::time::timeout(state.request_timeout, read)
            .await
            .unwrap_or(Err(ApiError::RequestTimeout(state.request_timeout))),
    };
    let (raw, held) = match received {
        Ok(received) => received,
        // Part of the body may still be on its way.
        Err(e) => return close(rejected(&state, e)),
    };
    if let Some(phase) = parts.extensions.get::<RequestPhase>() {
        phase.set(Phase::Arrived);
    }
    match count(&state, body_type, gzip, raw, held).await {
        Ok(response) => response,
        Err(e) => rejected(&state, e),
    }
}

/// The checks made on a request's head before its body is read: rate limit, token, body type
/// and encoding, and the end of recovery.
async fn admit(
    state: &AppState,
    client: IpAddr,
    headers: &HeaderMap,
) -> Result<(BodyType, bool), ApiError> {
    // Before the token check, so that guessing tokens is limited too.
    if let Some(limiter) = &state.rate_limiter
        && let Err(wait) = limiter.check(client)
    {
        return Err(ApiError::RateLimited {
            retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        });
    }
    if let Some(tokens) = &state.ingest_tokens
        && !tokens.allow(headers)
    {
        return Err(ApiError::Unauthorized);
    }
    let admitted = (body_type(headers)?, is_gzip(headers)?);
    state.counter.wait_recovered().await?;
    Ok(admitted)
}

/// Requests refused before routing (see [`super::server::OnRefused`]): each is counted, and a
/// warning says how many at most once a minute, so that a shipper whose requests never parse
/// is seen in the log without flooding it.
#[derive(Debug, Default)]
pub struct Refusals {
    /// When the last warning was written, and the refusals since.
    since_warning: parking_lot::Mutex<(Option<Instant>, u64)>,
}

impl Refusals {
    /// How often at most the warning is written.
    const WARN_EVERY: Duration = Duration::from_secs(60);

    /// Notes a request from `client` refused with `status`.
    pub fn note(&self, state: &AppState, client: SocketAddr, status: StatusCode) {
        state.metrics.request_refused(status);
        let mut since = self.since_warning.lock();
        since.1 += 1;
        if since.0.is_none_or(|at| at.elapsed() >= Self::WARN_EVERY) {
            tracing::warn!(
                refused = since.1,
                last_client = %client,
                last_status = status.as_u16(),
                "requests refused before routing: a malformed request line or header, a URI \
                 too long or a head too large (LOG_LEVEL=debug logs each)"
            );
            *since = (Some(Instant::now()), 0);
        }
    }
}

/// Counts a refused request in the metrics and answers it.
fn rejected(state: &AppState, e: ApiError) -> Response {
    state.metrics.entries_received(1);
    state.metrics.entries_rejected(e.code(), 1);
    e.into_response()
}

/// Parses and counts a received body, holding its share of `MAX_INFLIGHT_BODY_BYTES` (`held`)
/// until it is counted.
async fn count(
    state: &Arc<AppState>,
    body_type: BodyType,
    gzip: bool,
    raw: Bytes,
    held: Held,
) -> Result<Response, ApiError> {
    if !gzip && body_type == BodyType::Json && !is_array(&raw) {
        // The seed format stays on the runtime thread: one small entry needs no hand-off.
        let response = log_one(state, &raw)?;
        drop(held);
        state.counter.settle().await?;
        return Ok(response);
    }
    let limit = state.max_body_bytes;
    // The decoded copy of a gzip body is held too: reserved at its limit, then cut to its size.
    let decoded_held = if gzip {
        Some(state.body_budget.reserve(limit).await?)
    } else {
        None
    };
    let shared = state.clone();
    let work = move || {
        let state = shared;
        let decoded = if gzip {
            Cow::Owned(batch::gunzip_limited(&raw, limit)?)
        } else {
            Cow::Borrowed(&raw[..])
        };
        let decoded_held = decoded_held.map(|held| held.shrink_to(decoded.len() as u64));
        let response = match body_type {
            BodyType::Json if !is_array(&decoded) => log_one(&state, &decoded),
            BodyType::Json => log_batch(&state, BatchFormat::JsonArray, &decoded),
            BodyType::Lines(format) => log_batch(&state, BatchFormat::Lines(format), &decoded),
        };
        drop((held, decoded_held));
        response
    };
    // Decoding and parsing a batch is CPU work of up to a few hundred milliseconds; off the
    // runtime's threads it cannot stall other connections.
    let response = tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    state.counter.settle().await?;
    Ok(response)
}

/// Whether a body has something after its first line break: more than one JSON object.
fn has_second_line(body: &[u8]) -> bool {
    memchr::memchr(b'\n', body).is_some_and(|at| !body[at..].trim_ascii().is_empty())
}

/// Whether a JSON body's top level is an array (the batch form of `application/json`).
fn is_array(json: &[u8]) -> bool {
    json.trim_ascii_start().starts_with(b"[")
}

/// The seed format: one entry, today's reply, any entry error answered as the request's status.
fn log_one(state: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let entry = parse::parse_entry(body).map_err(|e| match e {
        // The commonest mistake of a shipper: NDJSON labelled application/json.
        EntryError::InvalidJson(reason) if has_second_line(body) => EntryError::InvalidJson(
            format!("{reason}; one object a line is NDJSON: send it as application/x-ndjson"),
        ),
        e => e,
    })?;
    let new = state.counter.record_one(entry)?;
    state.metrics.entries_received(1);
    if new {
        state.metrics.new_addresses(1);
    }
    Ok(logged(new, state.counter.counts().total()))
}

/// The seed format's reply, `{"status":"success","message":...,"unique_ips":N}`, written by
/// hand: it is on every single-entry request and its shape never varies (docs/DESIGN.md,
/// "HTTP").
fn logged(new: bool, unique_ips: u64) -> Response {
    let head: &[u8] = if new {
        br#"{"status":"success","message":"New IP logged","unique_ips":"#
    } else {
        br#"{"status":"success","message":"IP already seen","unique_ips":"#
    };
    let mut body = Vec::with_capacity(head.len() + 21);
    body.extend_from_slice(head);
    body.extend_from_slice(itoa::Buffer::new().format(unique_ips).as_bytes());
    body.push(b'}');
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A batch: every good entry counted, every bad one listed, 200 either way.
fn log_batch(state: &AppState, format: BatchFormat, body: &[u8]) -> Result<Response, ApiError> {
    let Counted { report, new_ips } = batch::count_batch(format, body, |entries| {
        Ok::<_, ApiError>(state.counter.record(entries)?)
    })?;
    let metrics = &state.metrics;
    metrics.entries_received(report.accepted + report.rejected);
    metrics.new_addresses(new_ips);
    for &(reason, n) in &report.rejected_by_reason {
        metrics.entries_rejected(reason, n);
    }
    Ok(Json(BatchLogged {
        status: "success",
        accepted: report.accepted,
        rejected: report.rejected,
        new_ips,
        unique_ips: state.counter.counts().total(),
        errors: report.errors,
    })
    .into_response())
}
