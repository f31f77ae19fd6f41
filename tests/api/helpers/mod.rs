//! Shared test fixtures, by concern: [`http`] (replies, the client, raw HTTP/1.1), [`app`]
//! ([`TestApp`], the service in-process on port 0), [`process`] ([`ServerProcess`], the real
//! binary, and the tools tests need) and [`exposition`] (reading `/metrics`).

pub mod app;
pub mod exposition;
pub mod http;
pub mod process;

pub use app::TestApp;
pub use exposition::*;
pub use http::*;
pub use process::*;
