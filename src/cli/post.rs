//! The service's side of `ip-counter send`: one batch posted to `POST /logs` (gzip-compressed,
//! retried on connection errors, 429 and 5xx with exponential backoff), its reply, and the TLS
//! trust of `--cacert`.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Deserialize;

use crate::batch::LineFormat;

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// An input could not be read.
    #[error("{input}: {source}")]
    Input {
        /// The input's name.
        input: String,
        /// What went wrong.
        source: io::Error,
    },
    /// The service refused a batch.
    #[error("{0}")]
    Service(String),
    /// The service could not be reached, or answered 429 or 5xx, on every retry.
    #[error("{0}")]
    Unreachable(String),
}

/// One batch of lines, on its way to a sending thread.
pub(super) struct Job {
    pub(super) body: Vec<u8>,
    pub(super) format: LineFormat,
    /// Which input and line the batch starts at, for messages.
    pub(super) input: String,
    pub(super) first_line: u64,
}

/// The part of the batch reply this tool reads.
#[derive(Deserialize)]
pub(super) struct BatchReply {
    pub(super) accepted: u64,
    pub(super) rejected: u64,
    pub(super) unique_ips: u64,
    pub(super) errors: Vec<ReplyError>,
}

/// A rejected line of a batch reply.
#[derive(Deserialize)]
pub(super) struct ReplyError {
    pub(super) line: u64,
    pub(super) message: String,
}

/// TLS settings that trust exactly the certificates in the PEM file at `path`.
pub(super) fn trusting(path: &std::path::Path) -> Result<ureq::tls::TlsConfig, SendError> {
    let bad = |reason: String| SendError::Input {
        input: path.display().to_string(),
        source: io::Error::new(io::ErrorKind::InvalidData, reason),
    };
    let pem = std::fs::read(path).map_err(|source| SendError::Input {
        input: path.display().to_string(),
        source,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(cert) = item.map_err(|e| bad(e.to_string()))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
        .build())
}

/// Posts one batch, retrying connection errors, 429 and 5xx with exponential backoff.
pub(super) fn post_batch(
    agent: &ureq::Agent,
    url: &str,
    authorization: Option<&str>,
    job: &Job,
    retries: u32,
) -> Result<BatchReply, SendError> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(job.body.len() / 4), Compression::fast());
    encoder
        .write_all(&job.body)
        .and_then(|()| encoder.flush())
        .expect("writing to a Vec cannot fail");
    let compressed = encoder.finish().expect("writing to a Vec cannot fail");
    let content_type = match job.format {
        LineFormat::Ndjson => "application/x-ndjson",
        LineFormat::Text => "text/plain",
    };
    let what = format!("batch from {} line {}", job.input, job.first_line);
    let mut attempt = 0;
    loop {
        let mut request = agent
            .post(url)
            .header("content-type", content_type)
            .header("content-encoding", "gzip");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let outcome = request.send(&compressed[..]);
        let retryable = match outcome {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let text = response.body_mut().read_to_string().unwrap_or_default();
                match status {
                    200 => {
                        return serde_json::from_str(&text).map_err(|e| {
                            SendError::Service(format!(
                                "{url} answered the {what} with something other than a batch \
                                 reply ({e}): {text}"
                            ))
                        });
                    }
                    429 | 500..=599 => format!("{status} {}", server_message(&text)),
                    _ => {
                        return Err(SendError::Service(format!(
                            "{url} refused the {what}: {status} {}",
                            server_message(&text)
                        )));
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        if attempt >= retries {
            return Err(SendError::Unreachable(format!(
                "{url}: the {what} failed after {} attempts: {retryable}",
                attempt + 1
            )));
        }
        thread::sleep(backoff(attempt));
        attempt += 1;
    }
}

/// The wait before retry number `attempt` (from 0): 0.2s doubling, at most 10s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(16))).min(Duration::from_secs(10))
}

/// `code: message` from the service's JSON error body, or the body itself.
fn server_message(text: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
        message: String,
    }
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => format!("{}: {}", body.error, body.message),
        Err(_) => text.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let waits: Vec<u64> = (0..8).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn the_server_message_is_read_from_its_error_body() {
        let body = r#"{"status":"error","error":"body_too_large","message":"too big"}"#;
        assert_eq!(server_message(body), "body_too_large: too big");
        assert_eq!(server_message(" Bad Gateway \n"), "Bad Gateway");
    }
}
