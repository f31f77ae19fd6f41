//! Black-box tests of the HTTP API: the service in-process on port 0 ([`helpers::TestApp`]) and
//! the real binary ([`helpers::ServerProcess`]), one module per area.

mod approx;
mod auth;
mod auto;
mod batch;
mod chaos;
mod config;
mod count;
mod data_dir;
mod deploy;
mod haproxy;
mod health;
mod helpers;
mod hostile;
mod limits;
mod logs;
mod metrics;
mod nginx;
mod openapi;
mod persistence;
mod prometheus;
mod redis;
mod schemathesis;
mod send;
mod send_follow;
mod shutdown;
mod syslog_ng;
mod tls;
mod windows;
