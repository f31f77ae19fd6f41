//! The service's own log: a tracing subscriber writing text or JSON lines to stderr.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, replaces the `LOG_LEVEL` filter.
///
/// # Panics
/// When called twice in one process.
pub fn init(config: &Config) {
    let filter = match &config.rust_log {
        Some(directives) => EnvFilter::new(directives),
        None => EnvFilter::new(config.log_level.as_str()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
