//! Everything that speaks HTTP: the listeners and the life of a connection ([`server`]), the
//! ingest route ([`ingest`]: body types, limits, decoding, counting, the reply), the status
//! routes ([`status`]), the scrape ([`scrape`]), what the handlers share ([`state`]), bearer
//! tokens ([`auth`]), [`ratelimit`], [`tls`], and [`error`] (the one error type every handler
//! answers with).

pub mod auth;
pub mod error;
pub mod ingest;
pub mod ratelimit;
pub mod scrape;
pub mod server;
pub mod state;
pub mod status;
pub mod tls;
