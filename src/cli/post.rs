//! The service's side of `ip-counter send`: the [`Sender`] that posts batches to `POST /logs`
//! (gzip-compressed, retried on connection errors, 429 and 5xx with exponential backoff) and
//! sums their replies into [`Sent`], and the TLS trust of `--cacert`.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

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
fn trusting(path: &Path) -> Result<ureq::tls::TlsConfig, SendError> {
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

/// What a run sent and what the service answered, summed over its batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sent {
    /// Lines sent, blank ones included.
    pub lines: u64,
    /// Requests that succeeded.
    pub requests: u64,
    /// Entries the service accepted.
    pub accepted: u64,
    /// Entries the service rejected.
    pub rejected: u64,
    /// The service's distinct count after the last batch.
    pub unique_ips: u64,
}

/// Most rejected lines reported on stderr over a whole run.
const MAX_NOTED_ERRORS: usize = 10;

/// How long a followed or streamed run waits before trying an unreachable service again.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(5);

/// The service's end of a run: where batches go, how, and how often they are retried.
pub struct Sender {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
    retries: u32,
    /// Lines per batch.
    pub(super) batch_lines: u64,
    /// The line format of every input, when given.
    pub(super) format: Option<LineFormat>,
    /// Rejected lines reported so far.
    noted: Mutex<usize>,
}

impl Sender {
    /// A sender posting to `POST /logs` under `to`, with `token` as a bearer token, trusting
    /// `cacert` (PEM) besides the system's roots; fails when it cannot be read.
    pub fn new(
        to: &str,
        token: Option<&str>,
        cacert: Option<&Path>,
        retries: u32,
        batch_lines: u64,
        format: Option<LineFormat>,
    ) -> Result<Sender, SendError> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(120)));
        if let Some(path) = cacert {
            config = config.tls_config(trusting(path)?);
        }
        Ok(Sender {
            agent: config.build().into(),
            url: logs_url(to),
            authorization: token.map(|token| format!("Bearer {token}")),
            retries,
            batch_lines,
            format,
            noted: Mutex::new(0),
        })
    }

    /// Posts `job` (with `--retries`) and adds its reply to `sent`; `note` gets the first
    /// rejected lines of the run, as `input:line: message`.
    pub(super) fn post(
        &self,
        job: &Job,
        sent: &Mutex<Sent>,
        note: &impl Fn(&str),
    ) -> Result<(), SendError> {
        let authorization = self.authorization.as_deref();
        let reply = post_batch(&self.agent, &self.url, authorization, job, self.retries)?;
        self.tally(
            job,
            &reply,
            &mut sent.lock().expect("no thread panics"),
            note,
        );
        Ok(())
    }

    fn tally(&self, job: &Job, reply: &BatchReply, t: &mut Sent, note: &impl Fn(&str)) {
        t.lines += count_lines(&job.body);
        t.requests += 1;
        t.accepted += reply.accepted;
        t.rejected += reply.rejected;
        // The count never goes down: the largest reply is the latest.
        t.unique_ips = t.unique_ips.max(reply.unique_ips);
        let mut n = self.noted.lock().expect("no thread panics");
        for e in reply.errors.iter().take(MAX_NOTED_ERRORS - *n) {
            let line = job.first_line + e.line - 1;
            note(&format!("{}:{line}: {}", job.input, e.message));
            *n += 1;
        }
    }

    /// Posts `job` until it is delivered, trying an unreachable service again every few
    /// seconds; `false` when `stop` turned true first. A refusal (4xx) is an error.
    pub(super) fn post_until_delivered(
        &self,
        job: &Job,
        stop: &AtomicBool,
        sent: &mut Sent,
        note: &impl Fn(&str),
    ) -> Result<bool, SendError> {
        let authorization = self.authorization.as_deref();
        loop {
            match post_batch(&self.agent, &self.url, authorization, job, self.retries) {
                Ok(reply) => {
                    self.tally(job, &reply, sent, note);
                    return Ok(true);
                }
                Err(SendError::Unreachable(why)) => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(false);
                    }
                    eprintln!(
                        "ip-counter send: {why}; trying again in {}s",
                        RETRY_UNREACHABLE.as_secs()
                    );
                    let until = Instant::now() + RETRY_UNREACHABLE;
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(100));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// `POST /logs` under `base`, unless `base` already is that URL.
fn logs_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/logs") {
        base.to_owned()
    } else {
        format!("{base}/logs")
    }
}

/// Lines in a batch body, a last one without its newline included.
pub(super) fn count_lines(body: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', body).count() as u64;
    newlines + u64::from(!body.ends_with(b"\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logs_path_is_added_once() {
        assert_eq!(logs_url("http://h:5000"), "http://h:5000/logs");
        assert_eq!(logs_url("http://h:5000/"), "http://h:5000/logs");
        assert_eq!(logs_url("http://h:5000/logs"), "http://h:5000/logs");
        assert_eq!(logs_url("http://h/ingest/"), "http://h/ingest/logs");
    }

    #[test]
    fn lines_are_counted_with_or_without_a_final_newline() {
        assert_eq!(count_lines(b""), 1);
        assert_eq!(count_lines(b"a\nb\n"), 2);
        assert_eq!(count_lines(b"a\nb"), 2);
    }

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
