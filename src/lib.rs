//! ip-counter counts the distinct client addresses in web traffic logs and exports the count
//! to Prometheus.
//!
//! A log entry travels `ingest → parse → counter → metrics`:
//!
//! - [`http::ingest`]: `POST /logs` on the ingest listener (with [`http::status`]: `/health`,
//!   `/ready`, `/stats`);
//! - [`parse`]: request bytes → a validated [`counter::Observation`] (address and event time);
//! - [`batch`]: many entries at once (NDJSON, JSON arrays, access-log text, gzip): lines →
//!   [`parse`] → observations and a per-line report;
//! - [`counter`]: the seam every caller records observations into and reads counts from, and
//!   its kinds ([`counter::exact`]: every distinct address in memory, with the time windows of
//!   [`counter::windows`]);
//! - [`wal`]: the write-ahead log of the data directory: records before they are counted,
//!   snapshots, recovery; generic over what a counter kind logs;
//! - [`metrics`]: the instruments, and the counter's gauges read at scrape time
//!   ([`http::scrape`]).
//!
//! Around them: [`app`] (the service: binds, serves, recovers, stops), [`config`] (settings,
//! validated before anything binds), [`http`] (the listeners,
//! connections, auth, rate limit, TLS and the one error type every handler answers with),
//! [`shutdown`], [`telemetry`], and [`cli`], the command-line tools (`count`, `send`, `verify`,
//! `repair`).

pub mod app;
pub mod batch;
pub mod cli;
pub mod config;
pub mod counter;
pub mod http;
pub mod metrics;
pub mod parse;
pub mod shutdown;
pub mod telemetry;
pub mod wal;
