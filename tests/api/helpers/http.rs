//! Talking HTTP to the service: [`Reply`] (a reply read whole, with its JSON), the client every
//! test uses, and a raw HTTP/1.1 client for what reqwest cannot send.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The exposition content type a Prometheus scraper asks for when it prefers OpenMetrics.
pub const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text; version=1.0.0";

/// One HTTP reply, read completely.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
}

impl Reply {
    /// Reads a whole response: status, headers and body.
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("reading the response body");
        Reply {
            status,
            headers,
            text,
        }
    }

    /// Reads a whole response, or `None` when the connection breaks before its end (a killed
    /// server).
    pub async fn read_lossy(response: reqwest::Response) -> Option<Reply> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.ok()?;
        Some(Reply {
            status,
            headers,
            text,
        })
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body {:?}",
                self.status, self.text
            )
        })
    }

    /// The value of a header ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header is not text"))
            .unwrap_or("")
    }

    /// The `Content-Type` header ("" when absent).
    pub fn content_type(&self) -> &str {
        self.header("content-type")
    }

    /// Asserts the reply is the SPEC's JSON error with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got {} {:?}",
            self.status, self.text
        );
        assert!(
            self.content_type().starts_with("application/json"),
            "error {code} should be JSON, content-type is {:?}",
            self.content_type()
        );
        let body = self.json();
        assert_eq!(body["status"], "error", "{body}");
        assert_eq!(body["error"], code, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "error needs a human message: {body}");
    }
}

/// An HTTP client that talks only to the given addresses, never through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("building the HTTP client")
}

/// A reply read off a raw TCP connection.
#[derive(Debug)]
pub struct RawReply {
    /// Status code from the status line.
    pub status: u16,
    /// Everything the server sent, as text.
    pub text: String,
}

/// Writes `request` (which should say `Connection: close`) to `addr` and reads until the server
/// closes. For requests reqwest cannot make: chunked uploads, partial bodies.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> RawReply {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        std::io::Result::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("raw request timed out")
        .expect("raw request failed");
    let text = String::from_utf8_lossy(&buf).into_owned();
    RawReply {
        status: status_of(&text),
        text,
    }
}

/// The `Content-Length` of a raw reply's head, 0 when it has none.
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// The status code of an HTTP/1.x response's status line.
pub fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}
