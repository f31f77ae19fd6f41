//! `POST /logs` and the ingest listener's request path: [`handle`] takes every request,
//! dispatching `POST /logs` here and the rest to the [`router`] ([`super::status`]).
//!
//! `POST /logs` checks the head (rate limit, token, body type and encoding), reads the body under
//! the size limit (decoded size for gzip) holding it against `MAX_INFLIGHT_BODY_BYTES`
//! ([`BodyBudget`]), hands the bytes to [`crate::parse`] (one entry) or [`crate::batch`] (many),
//! counts the addresses through [`super::state::AppState`], waits for them to be as durable as
//! `DURABILITY` promises, and answers; every refusal is an [`ApiError`], with
//! `Connection: close` when it leaves the body unread. It also tells the connection when a
//! request's body has arrived ([`RequestPhase`]), which is what shutdown waits for.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router, middleware};
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::state::AppState;
use super::{scrape, status};
use crate::batch::{self, BatchFormat, Counted, LineError, LineFormat};
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
/// service and in tests alike. `POST /logs` is dispatched here, before the router: axum's
/// routing, middleware and boxing cost about a tenth of the bare-hyper request rate and tripled
/// the p99 (`make load-test`), more than parsing and counting the entry. Every other request goes
/// through `router` and its tracking middleware.
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

/// What a `POST /logs` body holds, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyType {
    /// `application/json`: one entry, or an array of entries.
    Json,
    /// `application/x-ndjson`, `application/jsonl`, `text/plain`.
    Lines(LineFormat),
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
        // Not worth reading to keep the connection: it is over the limit.
        return close(rejected(&state, ApiError::BodyTooLarge { limit }));
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

/// Counts a refused request in the metrics and answers it.
fn rejected(state: &AppState, e: ApiError) -> Response {
    state.metrics.entries_received(1);
    state.metrics.entries_rejected(e.code(), 1);
    e.into_response()
}

/// Bodies up to this many bytes, of a known length, are read and discarded after a refusal that
/// did not need them, so that the connection stays open; larger or chunked ones get
/// `Connection: close`.
const DRAIN_MAX_BYTES: u64 = 1 << 20;

/// Passes on `response` to a request whose body was not read: the body is drained when that is
/// cheap, otherwise the reply closes the connection.
async fn unread<B>(body: B, response: Response, timeout: Duration) -> Response
where
    B: hyper::body::Body<Data = Bytes>,
{
    if body.is_end_stream() {
        return response;
    }
    let small = body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= DRAIN_MAX_BYTES);
    let drained = small
        && tokio::time::timeout(timeout.min(Duration::from_secs(1)), body.collect())
            .await
            .is_ok_and(|read| read.is_ok());
    if drained { response } else { close(response) }
}

/// Adds `Connection: close`: hyper then closes the connection after this reply.
fn close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
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
    Ok(logged(new, state.counter.counts().total()))
}

/// The seed format's reply, `{"status":"success","message":...,"unique_ips":N}`. Written by
/// hand, not with serde or `format!` (a tenth of the service's own instructions per request,
/// measured with callgrind): it is on every single-entry request and its shape never varies.
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

fn body_type(headers: &HeaderMap) -> Result<BodyType, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes());
    if value == b"application/json" {
        // The seed's own header, on every single-entry request.
        return Ok(BodyType::Json);
    }
    let media_type = value
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let is = |name: &str| media_type.eq_ignore_ascii_case(name.as_bytes());
    if is("application/json") {
        Ok(BodyType::Json)
    } else if is("application/x-ndjson")
        || is("application/jsonl")
        || is("application/jsonlines")
        || is("application/x-jsonlines")
    {
        Ok(BodyType::Lines(LineFormat::Ndjson))
    } else if is("text/plain") {
        Ok(BodyType::Lines(LineFormat::Text))
    } else {
        Err(ApiError::UnsupportedMediaType(
            String::from_utf8_lossy(value).into_owned(),
        ))
    }
}

/// Whether the body is gzip-encoded; any coding other than gzip or identity is refused.
fn is_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let coding = value.as_bytes().trim_ascii();
    if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
        Ok(true)
    } else if coding.eq_ignore_ascii_case(b"identity") || coding.is_empty() {
        Ok(false)
    } else {
        Err(ApiError::UnsupportedEncoding(
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ))
    }
}

/// The most compressed bytes read for a decoded limit of `limit`: gzip never shrinks data by
/// more than its framing (5 bytes a 64 KiB stored block, 18 a member), so a compressed body
/// larger than this cannot decode to `limit` bytes or fewer.
fn gzip_limit(limit: u64) -> u64 {
    limit.saturating_add(limit / 1024).saturating_add(4096)
}

/// Reads the whole body, refusing it as soon as it exceeds `limit`. `held` is its share of
/// `budget` taken for a known length; a chunked body takes its share as it arrives.
async fn read_body<B>(
    body: B,
    limit: u64,
    mut held: Held,
    budget: &BodyBudget,
) -> Result<(Bytes, Held), ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = ApiError::BodyTooLarge { limit };
    let known = body.size_hint().exact();
    let mut body = pin!(body);
    // A single entry arrives in one frame: kept as it is, without a copy or a list.
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BodyUnreadable(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        len += data.len() as u64;
        if len > limit {
            return Err(too_large);
        }
        if known.is_none() {
            held.add(budget.reserve(data.len() as u64).await?);
        }
        match &first {
            None => first = Some(data),
            Some(head) => {
                if more.is_empty() {
                    more.reserve(known.unwrap_or(len) as usize);
                    more.extend_from_slice(head);
                }
                more.extend_from_slice(&data);
            }
        }
    }
    let whole = match (first, more.is_empty()) {
        (None, _) => Bytes::new(),
        (Some(first), true) => first,
        (Some(_), false) => Bytes::from(more),
    };
    Ok((whole, held))
}

/// `MAX_INFLIGHT_BODY_BYTES`: the request bodies held in memory at once, all connections
/// together, in KiB permits. A request waits at most [`BodyBudget::WAIT`] for its share, then is
/// answered 503 `overloaded`.
#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    wait: Duration,
}

/// A request's share of the [`BodyBudget`], returned when dropped.
#[derive(Debug)]
pub struct Held(Option<OwnedSemaphorePermit>);

impl Held {
    fn add(&mut self, more: Held) {
        match (&mut self.0, more.0) {
            (Some(held), Some(more)) => held.merge(more),
            (none @ None, more) => *none = more,
            (_, None) => {}
        }
    }

    /// Returns all but `bytes` of the share.
    fn shrink_to(mut self, bytes: u64) -> Held {
        if let Some(held) = &mut self.0 {
            let keep = kib(bytes) as usize;
            if held.num_permits() > keep {
                drop(held.split(held.num_permits() - keep));
            }
        }
        self
    }
}

/// Permits for `bytes`: whole KiB, rounded up.
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    /// How long a request waits for its share before 503 `overloaded`.
    pub const WAIT: Duration = Duration::from_secs(1);

    /// A budget of `bytes`; requests wait at most `wait` (capped at [`Self::WAIT`]).
    pub fn new(bytes: u64, wait: Duration) -> BodyBudget {
        let permits = usize::try_from(bytes / 1024).unwrap_or(usize::MAX);
        BodyBudget {
            permits: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
            wait: wait.min(Self::WAIT),
        }
    }

    /// Takes `bytes` of the budget, waiting for other requests to return theirs.
    async fn reserve(&self, bytes: u64) -> Result<Held, ApiError> {
        let n = kib(bytes);
        if n == 0 {
            return Ok(Held(None));
        }
        if let Ok(permit) = self.permits.clone().try_acquire_many_owned(n) {
            return Ok(Held(Some(permit)));
        }
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Held(Some(permit))),
            _ => Err(ApiError::Overloaded),
        }
    }
}

/// Where the request a connection is serving stands: shared by the connection, which at
/// shutdown waits only for requests whose body has arrived, and `POST /logs`, which says when
/// its body has (a request without a body has it from the start).
#[derive(Debug, Clone, Default)]
pub struct RequestPhase(Arc<AtomicU8>);

/// The states of a [`RequestPhase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No request yet, or its head or body still arriving.
    Receiving,
    /// The whole request has arrived and is being answered.
    Arrived,
    /// The reply is being written (or was, and the connection waits for the next request).
    Replied,
}

impl RequestPhase {
    /// The current state.
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            1 => Phase::Arrived,
            2 => Phase::Replied,
            _ => Phase::Receiving,
        }
    }

    /// Sets the state.
    pub fn set(&self, phase: Phase) {
        let value = match phase {
            Phase::Receiving => 0,
            Phase::Arrived => 1,
            Phase::Replied => 2,
        };
        self.0.store(value, Ordering::Release);
    }
}
