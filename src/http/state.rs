//! [`AppState`]: what every handler on both listeners shares, and the counting policy (through
//! the journal when persistence is on, straight into the store otherwise).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::response::Response;
use tokio::sync::watch;

use super::auth::Tokens;
use super::error::ApiError;
use super::ingest::BodyBudget;
use super::ratelimit::RateLimiter;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::persist::{Journal, StorageError};
use crate::store::Store;

/// What every handler on both listeners shares.
#[derive(Debug)]
pub struct AppState {
    /// The distinct addresses.
    pub store: Arc<Store>,
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
    /// `PERSISTENCE=on`: addresses are counted through the journal, once recovery has set it.
    persistent: bool,
    pub(super) journal: Arc<OnceLock<Arc<Journal>>>,
    /// Turns true when `journal` is set.
    recovered: watch::Sender<bool>,
    pub(super) started: Instant,
    pub(super) ready: AtomicBool,
}

impl AppState {
    /// State around `store` with the request settings of `config`; not ready until
    /// [`set_ready`](Self::set_ready).
    pub fn new(store: Store, config: &Config) -> Self {
        let store = Arc::new(store);
        let journal = Arc::new(OnceLock::new());
        AppState {
            metrics: Metrics::new(store.clone(), Arc::clone(&journal)),
            store,
            max_body_bytes: config.max_body_bytes,
            ingest_tokens: config.auth_token.clone(),
            metrics_tokens: config.metrics_auth_token.clone(),
            rate_limiter: RateLimiter::new(config.rate_limit_per_ip),
            request_timeout: config.request_timeout,
            body_budget: BodyBudget::new(config.max_inflight_body_bytes, config.request_timeout),
            persistent: config.persistence().is_some(),
            journal,
            recovered: watch::Sender::new(false),
            started: Instant::now(),
            ready: AtomicBool::new(false),
        }
    }

    /// Whether `/ready` answers 200.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Recovery has read the data directory back into the store: writes go through `journal`
    /// from now on.
    pub fn set_journal(&self, journal: Arc<Journal>) {
        let _ = self.journal.set(journal);
        self.recovered.send_replace(true);
    }

    /// Waits (at most `REQUEST_TIMEOUT`) for recovery to finish, so that a client that arrives
    /// during a restart is answered late rather than refused.
    pub async fn wait_recovered(&self) -> Result<(), ApiError> {
        if !self.recovering() {
            return Ok(());
        }
        let mut recovered = self.recovered.subscribe();
        match tokio::time::timeout(self.request_timeout, recovered.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StorageError::Recovering.into()),
        }
    }

    /// Whether the data directory is still being read back into the store (whose count is
    /// partial until then).
    pub fn recovering(&self) -> bool {
        self.persistent && self.journal.get().is_none()
    }

    /// Counts one address; whether it was new.
    pub(super) fn count_one(&self, ip: IpAddr) -> Result<bool, ApiError> {
        match self.journal.get() {
            Some(journal) => Ok(journal.insert(ip)?),
            None if self.persistent => Err(StorageError::Recovering.into()),
            None => Ok(self.store.insert(ip)),
        }
    }

    /// Counts a batch's addresses; how many were new.
    pub(super) fn count_many(&self, ips: &[IpAddr]) -> Result<u64, ApiError> {
        match self.journal.get() {
            Some(journal) => Ok(journal.insert_many(ips)?),
            None if self.persistent => Err(StorageError::Recovering.into()),
            None => Ok(self.store.insert_many(ips)),
        }
    }

    /// Passes `response` on once what the request counted or found is as durable as
    /// `DURABILITY` promises: at once unless it is `fsync`.
    pub(super) async fn acknowledge(&self, response: Response) -> Result<Response, ApiError> {
        if let Some(journal) = self.journal.get()
            && journal.must_wait()
        {
            journal.durable().await?;
        }
        Ok(response)
    }
}
