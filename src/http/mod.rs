//! Everything that speaks HTTP: the listeners and the life of a connection ([`server`], on
//! [`workers`]), the
//! ingest route ([`ingest`]: body types, limits, decoding, counting, the reply), the status
//! routes ([`status`]), the scrape ([`scrape`]), what the handlers share ([`state`]), bearer
//! tokens ([`auth`]), [`ratelimit`], [`tls`], and [`error`] (the one error type every handler
//! answers with).

pub mod auth;
pub mod body;
pub mod error;
pub mod ingest;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod scrape;
pub mod server;
pub mod state;
pub mod status;
pub mod tls;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use auth::Tokens;
use tls::Tls;

/// The listeners' and handlers' settings, validated by [`crate::config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `MAX_BODY_BYTES`: the largest accepted body.
    pub max_body_bytes: u64,
    /// `MAX_INFLIGHT_BODY_BYTES`: bodies held in memory at once, all connections together.
    pub max_inflight_body_bytes: u64,
    /// `REQUEST_TIMEOUT`: the deadline for a request's head, and again for its body.
    pub request_timeout: Duration,
    /// `MAX_CONNECTIONS`: open connections per listener.
    pub max_connections: u32,
    /// `RATE_LIMIT_PER_IP`: `POST /logs` requests a second per client address; 0: no limit.
    pub rate_limit_per_ip: u32,
    /// `PROXY_PROTOCOL`: ingest connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Tokens `POST /logs` requires (`AUTH_TOKEN`, `AUTH_TOKEN_FILE`), when set.
    pub ingest_tokens: Option<Tokens>,
    /// Tokens `GET /metrics` requires (`METRICS_AUTH_TOKEN`), when set.
    pub metrics_tokens: Option<Tokens>,
    /// The ingest listener's certificate (`TLS_CERT`, `TLS_KEY`).
    pub ingest_tls: Option<Arc<Tls>>,
    /// The metrics listener's certificate (`METRICS_TLS_CERT`, `METRICS_TLS_KEY`).
    pub metrics_tls: Option<Arc<Tls>>,
}
