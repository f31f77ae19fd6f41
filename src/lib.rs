//! ip-counter counts the distinct client addresses in web traffic logs and exports the count
//! to Prometheus.
//!
//! A log entry travels `ingest → parse → store → metrics`:
//!
//! - [`ingest`]: the ingest listener's router: `POST /logs`, `/health`, `/ready`, `/stats`;
//! - [`parse`]: request bytes → a validated [`parse::Entry`] and its address;
//! - [`batch`]: many entries at once (NDJSON, JSON arrays, access-log text, gzip): lines →
//!   [`parse`] → addresses and a per-line report;
//! - [`store`]: the set of distinct addresses and its counts;
//! - [`persist`]: the data directory: each new address is logged before it is counted, and
//!   snapshots; read back at start;
//! - [`metrics`]: the metrics listener's router, reading the store at scrape time.
//!
//! Around them: [`config`] (settings, validated before anything binds), [`app`] (binds both
//! listeners and serves until shutdown), [`auth`] (bearer tokens), [`ratelimit`], [`tls`], [`shutdown`], [`telemetry`]
//! and [`error`] (the one error type every handler answers with).
//!
//! The command-line tools: [`count`] takes the same path without HTTP, reading log files
//! ([`logfile`]) through [`batch`] into a [`store::Store`]; [`send`] reads them the same way and
//! posts them in batches to a running service.

pub mod app;
pub mod auth;
pub mod batch;
pub mod config;
pub mod count;
pub mod error;
pub mod ingest;
pub mod logfile;
pub mod metrics;
pub mod parse;
pub mod persist;
pub mod ratelimit;
pub mod send;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;
