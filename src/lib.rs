//! ip-counter counts the distinct client addresses in web traffic logs and exports the count
//! to Prometheus.
//!
//! A log entry travels `ingest → parse → store → metrics`:
//!
//! - [`http::ingest`]: `POST /logs` on the ingest listener (with [`http::status`]: `/health`,
//!   `/ready`, `/stats`);
//! - [`parse`]: request bytes → a validated [`parse::Entry`] and its address;
//! - [`batch`]: many entries at once (NDJSON, JSON arrays, access-log text, gzip): lines →
//!   [`parse`] → addresses and a per-line report;
//! - [`store`]: the set of distinct addresses and its counts;
//! - [`persist`]: the data directory: each new address is logged before it is counted, and
//!   snapshots; read back at start;
//! - [`metrics`]: the instruments, read with the store at scrape time ([`http::scrape`]).
//!
//! Around them: [`config`] (settings, validated before anything binds), [`http`] (the listeners,
//! connections, auth, rate limit, TLS and the one error type every handler answers with),
//! [`shutdown`], [`telemetry`], and [`cli`], the command-line tools (`count`, `send`).

pub mod batch;
pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod parse;
pub mod persist;
pub mod shutdown;
pub mod store;
pub mod telemetry;
