//! A `POST /logs` body: its type and encoding from the head, reading it under the size limit
//! while it is held against `MAX_INFLIGHT_BODY_BYTES` ([`BodyBudget`]), and what becomes of a
//! body that a refusal leaves unread.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::batch::LineFormat;

/// What a `POST /logs` body holds, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyType {
    /// `application/json`: one entry, or an array of entries.
    Json,
    /// `application/x-ndjson`, `application/jsonl`, `text/plain`.
    Lines(LineFormat),
}

/// Bodies up to this many bytes, of a known length, are read and dropped as they arrive (never
/// held) after a refusal that did not need them, so that the connection stays open and the
/// client, which may still be sending, reads the reply; larger or chunked ones get
/// `Connection: close`.
const DRAIN_MAX_BYTES: u64 = 8 << 20;

/// Passes on `response` to a request whose body was not read: the body is drained when that is
/// cheap, otherwise the reply closes the connection.
pub(super) async fn unread<B>(body: B, response: Response, timeout: Duration) -> Response
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
        && tokio::time::timeout(timeout.min(Duration::from_secs(1)), discard(body))
            .await
            .is_ok_and(|read| read);
    if drained { response } else { close(response) }
}

/// Reads `body` to its end, dropping each chunk; whether it ended well.
async fn discard<B>(body: B) -> bool
where
    B: hyper::body::Body<Data = Bytes>,
{
    let mut body = pin!(body);
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return false;
        }
    }
    true
}

/// Adds `Connection: close`: hyper then closes the connection after this reply.
pub(super) fn close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pub(super) fn body_type(headers: &HeaderMap) -> Result<BodyType, ApiError> {
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
pub(super) fn is_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
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
pub(super) fn gzip_limit(limit: u64) -> u64 {
    limit.saturating_add(limit / 1024).saturating_add(4096)
}

/// Reads the whole body, refusing it as soon as it exceeds `limit`. `held` is its share of
/// `budget` taken for a known length; a chunked body takes its share as it arrives.
pub(super) async fn read_body<B>(
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
    pub(super) fn shrink_to(mut self, bytes: u64) -> Held {
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
    pub(super) async fn reserve(&self, bytes: u64) -> Result<Held, ApiError> {
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
