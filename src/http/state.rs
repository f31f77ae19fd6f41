//! [`AppState`]: what every handler on both listeners shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Settings;
use super::auth::Tokens;
use super::body::BodyBudget;
use super::ratelimit::RateLimiter;
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
    /// Set at shutdown: `/ready` answers 503 from then on.
    pub(super) stopping: AtomicBool,
}

impl AppState {
    /// State around `counter` with the request settings of `settings`.
    pub fn new(counter: Arc<Counter>, settings: &Settings) -> Self {
        AppState {
            metrics: Metrics::new(counter.clone()),
            counter,
            max_body_bytes: settings.max_body_bytes,
            ingest_tokens: settings.ingest_tokens.clone(),
            metrics_tokens: settings.metrics_tokens.clone(),
            rate_limiter: RateLimiter::new(settings.rate_limit_per_ip),
            request_timeout: settings.request_timeout,
            body_budget: BodyBudget::new(
                settings.max_inflight_body_bytes,
                settings.request_timeout,
            ),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
        }
    }

    /// Shutdown has begun: `/ready` answers 503, so that load balancers stop sending.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}
