//! [`Flags`]: the raw settings, as clap reads them from flags and environment variables, with
//! the parsers of their values and the one-line error a bad one gets.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, ValueEnum};

use super::ConfigError;
use crate::counter::windows::MAX_STEPS;
use crate::http::auth::Tokens;
use crate::wal::Durability;

/// The service's settings as the command line and environment give them, each value parsed
/// but not yet checked against the others, nor its files read: [`Config`](super::Config) is that.
#[derive(Debug, Clone, Parser)]
#[command(name = "ip-counter", version, about, long_about = None)]
pub struct Flags {
    /// Port of the ingest listener (POST /logs, /health, /ready, /stats); 0 picks a free port
    #[arg(long, env = "LOG_PORT", default_value_t = 5000)]
    pub log_port: u16,

    /// Port of the metrics listener (GET /metrics); 0 picks a free port
    #[arg(long, env = "METRICS_PORT", default_value_t = 9102)]
    pub metrics_port: u16,

    /// Address both listeners bind to (`::` for dual stack)
    #[arg(long, env = "SERVER_HOST", default_value = "0.0.0.0")]
    pub server_host: IpAddr,

    /// Log verbosity
    #[arg(long, env = "LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Full tracing filter (e.g. `ip_counter=debug,hyper=warn`); overrides LOG_LEVEL
    #[arg(long, env = "RUST_LOG", value_parser = parse_filter)]
    pub rust_log: Option<String>,

    /// Log line format
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest accepted request body, e.g. `64MiB`, `1GB` or plain bytes
    #[arg(long, env = "MAX_BODY_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub max_body_bytes: u64,

    /// Request bodies held in memory at once, all connections together (a gzip body counts its
    /// decoded copy too); past it a request waits up to 1 s, then gets 503 `overloaded`. At least
    /// twice MAX_BODY_BYTES
    #[arg(long, env = "MAX_INFLIGHT_BODY_BYTES", default_value = "512MiB", value_parser = parse_size)]
    pub max_inflight_body_bytes: u64,

    /// Directory of the address log and snapshots (created if missing; one process each)
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// `off` keeps the count in memory only: a restart starts it from zero
    #[arg(long, env = "PERSISTENCE", value_enum, default_value_t = Switch::On)]
    pub persistence: Switch,

    /// What a 2xx promises: `buffered`, the new addresses were written to the OS (they survive
    /// a killed process); `fsync`, they are on stable storage (they survive a power loss)
    #[arg(long, env = "DURABILITY", value_enum, default_value_t = Durability::Buffered)]
    pub durability: Durability,

    /// How often buffered mode syncs the log to disk
    #[arg(long, env = "FSYNC_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub fsync_interval: Duration,

    /// How often the whole count is written as a snapshot and older logs removed (also when
    /// the log reaches 64 MiB)
    #[arg(long, env = "SNAPSHOT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub snapshot_interval: Duration,

    /// Sliding windows to count distinct addresses over, comma-separated (e.g. `5m,1h,24h`);
    /// empty: off. Each is exact to a step of the shortest / 60
    #[arg(long, env = "WINDOWS", default_value = "5m,1h,24h", value_parser = parse_windows)]
    pub windows: Windows,

    /// An entry timestamped further ahead of the clock than this counts at its arrival time
    #[arg(long, env = "MAX_CLOCK_SKEW", default_value = "5m", value_parser = parse_duration)]
    pub max_clock_skew: Duration,

    /// `exact` keeps every address; `approx` a HyperLogLog sketch per family (fixed memory,
    /// relative standard error 1.04/sqrt(2^HLL_PRECISION)); `auto` exact, then once the exact
    /// structures reach MEMORY_BUDGET the sketch, seeded from the set
    #[arg(long, env = "COUNT_MODE", value_enum, default_value_t = CountMode::Exact)]
    pub count_mode: CountMode,

    /// With COUNT_MODE=auto: the exact structures' size at which counting switches to the
    /// sketch, e.g. `1GiB` or plain bytes
    #[arg(long, env = "MEMORY_BUDGET", default_value = "1GiB", value_parser = parse_size)]
    pub memory_budget: u64,

    /// log2 of the sketch's registers, 4 to 21; 14: 0.81 % relative standard error in 32 KiB
    #[arg(long, env = "HLL_PRECISION", default_value_t = 14,
          value_parser = clap::value_parser!(u8).range(4..=21))]
    pub hll_precision: u8,

    /// `local`, or `redis`: the count is shared by every instance on the same Redis (needs
    /// REDIS_URL and PERSISTENCE=on, whose data directory holds what Redis has not confirmed)
    #[arg(long, env = "STORE", value_enum, default_value_t = Store::Local)]
    pub store: Store,

    /// The shared store: a `redis://` or `rediss://` URL (a password goes in it:
    /// redis://:PASSWORD@host), or several, comma-separated, the seed nodes of a Redis Cluster
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key, so that deployments can share one Redis
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "ipc")]
    pub redis_key_prefix: String,

    /// Bearer token(s) POST /logs requires, comma-separated (several while rotating); none: open
    #[arg(long, env = "AUTH_TOKEN", hide_env_values = true, value_parser = Tokens::parse)]
    pub auth_token: Option<Tokens>,

    /// File with more AUTH_TOKEN tokens, comma- or newline-separated (e.g. a mounted secret)
    #[arg(long, env = "AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Bearer token(s) GET /metrics requires, comma-separated; none: open
    #[arg(long, env = "METRICS_AUTH_TOKEN", hide_env_values = true, value_parser = Tokens::parse)]
    pub metrics_auth_token: Option<Tokens>,

    /// POST /logs requests a second per client address (a burst of as many); 0: no limit
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value_t = 0)]
    pub rate_limit_per_ip: u32,

    /// `on`: every ingest connection starts with a PROXY protocol header (v1 or v2, as haproxy's
    /// send-proxy sends it) naming the client; connections without one are closed. Only behind
    /// a balancer that sends it, since the header is believed
    #[arg(long, env = "PROXY_PROTOCOL", value_enum, default_value_t = Switch::Off)]
    pub proxy_protocol: Switch,

    /// Deadline for a request's headers, and again for its body; also how long an idle
    /// keep-alive connection stays open. E.g. `500ms`, `30s`, `1m`
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Open connections per listener; more wait in the kernel's accept queue
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// PEM certificate chain for HTTPS on the ingest listener (with TLS_KEY); re-read on SIGHUP
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS_CERT
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificate chain for HTTPS on the metrics listener (with METRICS_TLS_KEY)
    #[arg(long, env = "METRICS_TLS_CERT", requires = "metrics_tls_key")]
    pub metrics_tls_cert: Option<PathBuf>,

    /// PEM private key for METRICS_TLS_CERT
    #[arg(long, env = "METRICS_TLS_KEY", requires = "metrics_tls_cert")]
    pub metrics_tls_key: Option<PathBuf>,
}

/// Verbosity of the service's own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(missing_docs)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The level as a tracing filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// How addresses are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CountMode {
    /// Every address kept: the count is exact.
    Exact,
    /// A HyperLogLog sketch: fixed memory, a known error.
    Approx,
    /// Exact until MEMORY_BUDGET, then the sketch.
    Auto,
}

/// Where the count lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Store {
    /// In this instance (and its data directory).
    Local,
    /// In Redis, shared by every instance pointing at it.
    Redis,
}

/// A setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// A clap error as what stops the program: help and version text, or a bad setting.
pub(crate) fn to_config_error(e: clap::Error) -> ConfigError {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ConfigError::Info(e.to_string()),
        _ => ConfigError::Invalid(one_line(&e)),
    }
}

/// Turns clap's multi-line report into one line that names the setting by flag and variable.
fn one_line(e: &clap::Error) -> String {
    if let (ErrorKind::MissingRequiredArgument, Some(ContextValue::Strings(missing))) =
        (e.kind(), e.get(ContextKind::InvalidArg))
    {
        let names: Vec<String> = missing
            .iter()
            .map(|arg| {
                let flag = arg.split_whitespace().next().unwrap_or(arg);
                let var = flag
                    .trim_start_matches("--")
                    .replace('-', "_")
                    .to_uppercase();
                format!("{var} ({flag})")
            })
            .collect();
        return format!(
            "error: {} must be set too: the settings given need it",
            names.join(" and ")
        );
    }
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let first = e.to_string();
    let first = first.lines().next().unwrap_or("invalid arguments");
    match (arg, value) {
        (Some(arg), Some(value)) => {
            let flag = arg.split_whitespace().next().unwrap_or(&arg);
            let var = flag
                .trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase();
            let reason = first.rsplit_once(": ").map(|(_, r)| r).unwrap_or(first);
            // A bad token is still somebody's secret: it is not echoed into logs.
            let value = if var.ends_with("AUTH_TOKEN") {
                "(hidden)".to_owned()
            } else {
                format!("{value:?}")
            };
            format!("error: invalid value {value} for {var} ({flag}): {reason}")
        }
        _ => first.to_string(),
    }
}

/// Checks a tracing filter such as `info,ip_counter=debug`.
fn parse_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// The longest duration any setting takes: longer ones are typing mistakes, and bounding them
/// keeps every deadline computed from them (`Instant + Duration`) from overflowing.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The shortest: below it a timer would spin.
pub(super) const MIN_DURATION: Duration = Duration::from_millis(1);

/// The largest size any setting takes (1 TiB).
const MAX_SIZE: u64 = 1 << 40;

/// Parses a duration: `500ms`, `30s`, `5m`, `1h`; from 1ms to 365 days.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    if (MIN_DURATION..=MAX_DURATION).contains(&duration) {
        Ok(duration)
    } else {
        Err("must be from 1ms to 365 days".into())
    }
}

/// `WINDOWS`: labelled durations, shortest first; none for off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows(pub Vec<(String, Duration)>);

/// Parses `WINDOWS`: comma-separated durations of at least a minute, each at most
/// [`MAX_STEPS`] steps of the shortest / 60 (so that 2-byte stamps can tell them apart).
fn parse_windows(text: &str) -> Result<Windows, String> {
    let mut windows = Vec::new();
    for label in text.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        let window = parse_duration(label)?;
        if window < Duration::from_secs(60) {
            return Err(format!("{label} is shorter than 1m, the shortest window"));
        }
        if windows.iter().any(|(_, w)| *w == window) {
            return Err(format!("{label} is given twice"));
        }
        windows.push((label.to_owned(), window));
    }
    windows.sort_by_key(|&(_, w)| w);
    if let (Some((short, s)), Some((long, l))) = (windows.first(), windows.last()) {
        let step = (s.as_secs() / 60).max(1);
        if l.as_secs() / step > MAX_STEPS {
            return Err(format!(
                "{long} spans more than {MAX_STEPS} steps of {step}s (the step is the shortest \
                 window, {short}, / 60); give a longer shortest window or a shorter longest one"
            ));
        }
    }
    Ok(Windows(windows))
}

/// Parses a byte size: `64MiB`, `1GB`, `512k` or plain bytes; from 1 byte to 1 TiB.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.trim().parse()?;
    match size.as_u64() {
        n @ 1..=MAX_SIZE => Ok(n),
        _ => Err("must be from 1 byte to 1TiB".into()),
    }
}
