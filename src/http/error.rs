//! The one error type every handler answers with, and its HTTP mapping.
//!
//! Client errors (4xx) are answered quietly: they are the caller's to fix, and logging each
//! would let a bad client flood the log. Every reply has the same JSON shape:
//! `{"status":"error","error":"<code>","message":"<human text>"}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::batch::BodyError;
use crate::parse::EntryError;
use crate::wal::StorageError;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The log entry itself was bad.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// The body is larger than `MAX_BODY_BYTES`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The body could not be read from the connection.
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    /// A `Content-Type` this endpoint does not take.
    #[error(
        "Content-Type {0:?} is not supported; send application/json, application/x-ndjson, \
         application/jsonl (or application/jsonlines) or text/plain"
    )]
    UnsupportedMediaType(String),
    /// A `Content-Encoding` other than gzip.
    #[error("Content-Encoding {0:?} is not supported; send gzip or no encoding")]
    UnsupportedEncoding(String),
    /// A method the route does not take; carries the allowed ones.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// No such route.
    #[error("no such endpoint")]
    NotFound,
    /// A token is configured and the request did not present one of them.
    #[error("this endpoint needs an Authorization: Bearer token")]
    Unauthorized,
    /// The client is over `RATE_LIMIT_PER_IP`; it may try again after this many seconds.
    #[error("too many requests from this address; retry after {retry_after}s")]
    RateLimited {
        /// Whole seconds, at least 1.
        retry_after: u64,
    },
    /// The body did not arrive within `REQUEST_TIMEOUT`.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// The addresses could not be made as durable as `DURABILITY` promises: not acknowledged.
    #[error("{0}; not counted, try again")]
    StorageUnavailable(#[from] StorageError),
    /// `MAX_INFLIGHT_BODY_BYTES` stayed in use by other requests for as long as a request waits.
    #[error(
        "the service holds as many request bodies as MAX_INFLIGHT_BODY_BYTES allows; not \
         counted, retry shortly"
    )]
    Overloaded,
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => ApiError::BodyTooLarge { limit },
            BodyError::Unreadable(reason) => ApiError::BodyUnreadable(reason),
        }
    }
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Entry(_) | ApiError::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) | ApiError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::StorageUnavailable(_) | ApiError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The stable machine-readable code, also the `reason` label of the rejected-entries metric.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Entry(e) => e.code(),
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BodyUnreadable(_) => "invalid_body",
            ApiError::UnsupportedMediaType(_) | ApiError::UnsupportedEncoding(_) => {
                "unsupported_media_type"
            }
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::NotFound => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::StorageUnavailable(_) => "storage_unavailable",
            ApiError::Overloaded => "overloaded",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    status: &'static str,
    error: &'static str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let body = ErrorBody {
            status: "error",
            error: self.code(),
            message: &message,
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="ip-counter""#),
                );
            }
            ApiError::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ApiError::StorageUnavailable(_) | ApiError::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn reply(err: ApiError) -> (StatusCode, serde_json::Value, Option<String>) {
        let response = err.into_response();
        let status = response.status();
        let allow = response
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap(), allow)
    }

    #[tokio::test]
    async fn every_error_has_the_json_shape_and_its_status() {
        let cases = [
            (ApiError::Entry(EntryError::MissingIp), 400, "missing_ip"),
            (ApiError::BodyTooLarge { limit: 10 }, 413, "body_too_large"),
            (
                ApiError::BodyUnreadable("reset".into()),
                400,
                "invalid_body",
            ),
            (
                ApiError::UnsupportedMediaType("text/html".into()),
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::UnsupportedEncoding("br".into()),
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::MethodNotAllowed("POST"),
                405,
                "method_not_allowed",
            ),
            (ApiError::NotFound, 404, "not_found"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (
                ApiError::RateLimited { retry_after: 1 },
                429,
                "rate_limited",
            ),
            (
                ApiError::RequestTimeout(std::time::Duration::from_secs(1)),
                408,
                "request_timeout",
            ),
            (
                ApiError::StorageUnavailable(StorageError::Recovering),
                503,
                "storage_unavailable",
            ),
            (ApiError::Overloaded, 503, "overloaded"),
        ];
        for (err, status, code) in cases {
            let (got_status, body, _) = reply(err).await;
            assert_eq!(got_status.as_u16(), status, "{code}");
            assert_eq!(body["status"], "error");
            assert_eq!(body["error"], code);
            assert!(!body["message"].as_str().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn method_not_allowed_names_the_allowed_methods() {
        let (_, _, allow) = reply(ApiError::MethodNotAllowed("POST")).await;
        assert_eq!(allow.as_deref(), Some("POST"));
    }
}
