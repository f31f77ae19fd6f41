//! [`AppState`]: what every handler on both listeners shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::auth::Tokens;
use super::ingest::BodyBudget;
use super::ratelimit::RateLimiter;
use crate::config::Config;
use crate::counter::Counter;
use crate::metrics::Metrics;

/// What every handler on both listeners shares.
#[derive(Debug)]
pub struct AppState {
    /// Where entries are counted and counts read.
    pub counter: Arc<Counter>,
    /// Instruments and the exposition.
    pub metrics: Metrics,
    /// Largest accepted body in bytes.
    pub max_body_bytes: u64,
    /// Tokens `POST /logs` requires, when set.
    pub ingest_tokens: Option<Tokens>,
    /// Tokens `GET /metrics` requires, when set.
    pub metrics_tokens: Option<Tokens>,
    /// `RATE_LIMIT_PER_IP`, when set.
    pub rate_limiter: Option<RateLimiter>,
    /// How long a request body may take to arrive.
    pub request_timeout: Duration,
    /// `MAX_INFLIGHT_BODY_BYTES`.
    pub body_budget: BodyBudget,
    pub(super) started: Instant,
    /// Not while starting or shutting down.
    pub(super) ready: AtomicBool,
}

impl AppState {
    /// State around `counter` with the request settings of `config`; not ready until
    /// [`set_ready`](Self::set_ready).
    pub fn new(counter: Arc<Counter>, config: &Config) -> Self {
        AppState {
            metrics: Metrics::new(counter.clone()),
            counter,
            max_body_bytes: config.max_body_bytes,
            ingest_tokens: config.auth_token.clone(),
            metrics_tokens: config.metrics_auth_token.clone(),
            rate_limiter: RateLimiter::new(config.rate_limit_per_ip),
            request_timeout: config.request_timeout,
            body_budget: BodyBudget::new(config.max_inflight_body_bytes, config.request_timeout),
            started: Instant::now(),
            ready: AtomicBool::new(false),
        }
    }

    /// Whether `/ready` answers 200 (as long as the counter is writable too).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
