//! Settings: command-line flags and environment variables, parsed and validated into one
//! [`Config`] before anything binds. A flag wins over its variable. The only I/O is reading the
//! files settings name (`AUTH_TOKEN_FILE`, the TLS certificates and keys), so that a missing or
//! broken file is a bad setting like any other.
//!
//! The bare `ip-counter` is the service; the subcommands (`count`, ...) are the command-line
//! tools, each with its own arguments ([`Invocation`]). The service's settings do not apply to
//! them, so a bad `LOG_PORT` in the environment never stops a `count`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::cli::count::CountArgs;
use crate::cli::data_dir::{RepairArgs, VerifyArgs};
use crate::cli::send::SendArgs;
use crate::http::auth::Tokens;
use crate::http::tls::Tls;
use crate::wal::{Durability, Settings};

/// Exit status for a bad setting, as for any usage error.
pub const USAGE_EXIT_CODE: u8 = 2;

/// Every setting of the service, validated.
#[derive(Debug, Clone, Parser)]
#[command(name = "ip-counter", version, about, long_about = None)]
pub struct Config {
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

    /// The ingest listener's certificate, read from TLS_CERT and TLS_KEY.
    #[arg(skip)]
    pub ingest_tls: Option<Arc<Tls>>,

    /// The metrics listener's certificate, read from METRICS_TLS_CERT and METRICS_TLS_KEY.
    #[arg(skip)]
    pub metrics_tls: Option<Arc<Tls>>,
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

/// What stops the program before it starts: a bad setting, or a request for help/version text.
#[derive(Debug)]
pub enum ConfigError {
    /// `--help` or `--version`: print the text and exit 0.
    Info(String),
    /// A bad setting: print the one-line message and exit with [`USAGE_EXIT_CODE`].
    Invalid(String),
}

/// What the program was asked to do.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// No subcommand: run the service.
    Serve(Box<Config>),
    /// `count`: distinct addresses in log files.
    Count(CountArgs),
    /// `send`: log files posted to a running service.
    Send(SendArgs),
    /// `verify`: a data directory checked offline.
    Verify(VerifyArgs),
    /// `repair`: a damaged data directory rebuilt from what can still be read.
    Repair(RepairArgs),
}

/// The subcommands, for clap.
#[derive(Debug, Clone, Subcommand)]
enum Command {
    /// Count the distinct client addresses in log files (NDJSON or access-log lines, plain or
    /// gzip) and print the number
    Count(CountArgs),
    /// Backfill a running service: post log files to its POST /logs in gzip-compressed batches
    Send(SendArgs),
    /// Check a data directory offline: read it as a start would, change nothing, print what it
    /// holds; exit 1 naming the file and offset of any damage
    Verify(VerifyArgs),
    /// Rebuild a damaged or incomplete data directory (service stopped): keep every address
    /// that can still be read, in a new snapshot; the replaced files go to DIR/damaged-<time>/
    Repair(RepairArgs),
}

/// The whole command line as `--help` shows it: the service's settings, or a subcommand.
#[derive(Debug, Parser)]
#[command(name = "ip-counter", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    serve: Config,

    #[command(subcommand)]
    command: Option<Command>,
}

/// A subcommand's command line, parsed without the service's settings: clap reads a flattened
/// setting's variable even when a subcommand is given, and `LOG_PORT=x` must not stop a `count`.
#[derive(Debug, Parser)]
#[command(name = "ip-counter", version)]
struct Tool {
    #[command(subcommand)]
    command: Command,
}

impl Invocation {
    /// Reads the process's arguments and environment.
    pub fn load() -> Result<Invocation, ConfigError> {
        Self::from_args(std::env::args_os())
    }

    /// Parses the given arguments (the first is the program name). Without a subcommand they
    /// are the service's settings, read as [`Config::from_args`] reads them.
    pub fn from_args<I, T>(args: I) -> Result<Invocation, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let names_a_tool = args
            .get(1)
            .and_then(|arg| arg.to_str())
            .is_some_and(|arg| Tool::command().find_subcommand(arg).is_some());
        let command = if names_a_tool {
            Tool::try_parse_from(args).map_err(to_config_error)?.command
        } else {
            match Cli::try_parse_from(args).map_err(to_config_error)? {
                Cli {
                    serve,
                    command: None,
                } => return serve.read_files().map(|c| Invocation::Serve(Box::new(c))),
                Cli {
                    command: Some(command),
                    ..
                } => command,
            }
        };
        Ok(match command {
            Command::Count(args) => Invocation::Count(args),
            Command::Send(args) => Invocation::Send(args),
            Command::Verify(args) => Invocation::Verify(args),
            Command::Repair(args) => Invocation::Repair(args),
        })
    }
}

impl Config {
    /// Reads the process's arguments and environment.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_args(std::env::args_os())
    }

    /// Parses the given arguments (the first is the program name); the environment still
    /// supplies settings that no flag names.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::try_parse_from(args)
            .map_err(to_config_error)?
            .read_files()
    }

    /// The persistence settings; `None` with `PERSISTENCE=off`.
    pub fn persistence(&self) -> Option<Settings> {
        (self.persistence == Switch::On).then(|| Settings {
            dir: self.data_dir.clone(),
            durability: self.durability,
            fsync_interval: self.fsync_interval,
            snapshot_interval: self.snapshot_interval,
        })
    }

    /// Checks the settings against each other, then reads the files they name: the token file
    /// and the certificates.
    fn read_files(self) -> Result<Config, ConfigError> {
        // A gzip body and its decoded copy must fit, or the largest would wait forever.
        if self.max_inflight_body_bytes / 2 < self.max_body_bytes {
            return Err(ConfigError::Invalid(format!(
                "error: invalid value {} for MAX_INFLIGHT_BODY_BYTES (--max-inflight-body-bytes): \
                 must be at least twice MAX_BODY_BYTES ({})",
                self.max_inflight_body_bytes, self.max_body_bytes
            )));
        }
        let mut config = self.read_token_file()?;
        let load = |cert: &Option<PathBuf>, key: &Option<PathBuf>, var: &str, flag: &str| {
            // clap has checked that the two come together.
            let (Some(cert), Some(key)) = (cert, key) else {
                return Ok(None);
            };
            Tls::load(cert, key)
                .map(|tls| Some(Arc::new(tls)))
                .map_err(|reason| {
                    ConfigError::Invalid(format!(
                        "error: invalid value for {var} ({flag}): {reason}"
                    ))
                })
        };
        config.ingest_tls = load(&config.tls_cert, &config.tls_key, "TLS_CERT", "--tls-cert")?;
        config.metrics_tls = load(
            &config.metrics_tls_cert,
            &config.metrics_tls_key,
            "METRICS_TLS_CERT",
            "--metrics-tls-cert",
        )?;
        Ok(config)
    }

    /// Adds the tokens of `AUTH_TOKEN_FILE` to `AUTH_TOKEN`'s.
    fn read_token_file(mut self) -> Result<Config, ConfigError> {
        let Some(path) = &self.auth_token_file else {
            return Ok(self);
        };
        let bad = |reason: String| {
            ConfigError::Invalid(format!(
                "error: invalid value {:?} for AUTH_TOKEN_FILE (--auth-token-file): {reason}",
                path.display().to_string()
            ))
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let from_file = Tokens::parse(&text).map_err(bad)?;
        self.auth_token = Some(match self.auth_token.take() {
            Some(tokens) => tokens.with(from_file),
            None => from_file,
        });
        Ok(self)
    }
}

fn to_config_error(e: clap::Error) -> ConfigError {
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
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The shortest: below it a timer would spin.
const MIN_DURATION: Duration = Duration::from_millis(1);

/// The largest size any setting takes (1 TiB).
const MAX_SIZE: u64 = 1 << 40;

/// Parses a duration: `500ms`, `30s`, `5m`, `1h`; from 1ms to 365 days.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    if (MIN_DURATION..=MAX_DURATION).contains(&duration) {
        Ok(duration)
    } else {
        Err("must be from 1ms to 365 days".into())
    }
}

/// Parses a byte size: `64MiB`, `1GB`, `512k` or plain bytes; from 1 byte to 1 TiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.trim().parse()?;
    match size.as_u64() {
        n @ 1..=MAX_SIZE => Ok(n),
        _ => Err("must be from 1 byte to 1TiB".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_args(std::iter::once("ip-counter").chain(args.iter().copied()))
    }

    fn invalid(args: &[&str]) -> String {
        match parse(args) {
            Err(ConfigError::Invalid(msg)) => msg,
            other => panic!("expected a bad-setting error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn flags_set_every_field() {
        let cfg = parse(&[
            "--log-port=6000",
            "--metrics-port=9200",
            "--server-host=::",
            "--log-level=debug",
            "--rust-log=ip_counter=trace",
            "--log-format=json",
            "--max-body-bytes=1MiB",
        ])
        .unwrap();
        assert_eq!(cfg.log_port, 6000);
        assert_eq!(cfg.metrics_port, 9200);
        assert_eq!(cfg.server_host, "::".parse::<IpAddr>().unwrap());
        assert_eq!(cfg.log_level, LogLevel::Debug);
        assert_eq!(cfg.rust_log.as_deref(), Some("ip_counter=trace"));
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn persistence_defaults_and_flags() {
        let settings = parse(&[]).unwrap().persistence().expect("on by default");
        assert_eq!(settings.dir, PathBuf::from("./data"));
        assert_eq!(settings.durability, Durability::Buffered);
        assert_eq!(settings.fsync_interval, Duration::from_secs(1));
        assert_eq!(settings.snapshot_interval, Duration::from_secs(300));
        let settings = parse(&[
            "--data-dir=/var/lib/x",
            "--durability=fsync",
            "--fsync-interval=250ms",
            "--snapshot-interval=1h",
        ])
        .unwrap()
        .persistence()
        .unwrap();
        assert_eq!(settings.dir, PathBuf::from("/var/lib/x"));
        assert_eq!(settings.durability, Durability::Fsync);
        assert_eq!(settings.fsync_interval, Duration::from_millis(250));
        assert_eq!(settings.snapshot_interval, Duration::from_secs(3600));
        assert!(
            parse(&["--persistence=off"])
                .unwrap()
                .persistence()
                .is_none()
        );
        assert!(invalid(&["--persistence=maybe"]).contains("PERSISTENCE (--persistence)"));
        assert!(invalid(&["--snapshot-interval=0s"]).contains("SNAPSHOT_INTERVAL"));
    }

    #[test]
    fn a_bad_port_is_one_line_naming_the_variable() {
        let msg = invalid(&["--log-port=70000"]);
        assert!(
            msg.contains("LOG_PORT") && msg.contains("--log-port"),
            "{msg}"
        );
        assert!(msg.contains("70000"), "{msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }

    #[test]
    fn bad_values_name_their_setting() {
        for (arg, var) in [
            ("--metrics-port=x", "METRICS_PORT"),
            ("--server-host=localhost", "SERVER_HOST"),
            ("--log-level=loud", "LOG_LEVEL"),
            ("--log-format=xml", "LOG_FORMAT"),
            ("--max-body-bytes=lots", "MAX_BODY_BYTES"),
            ("--max-body-bytes=0", "MAX_BODY_BYTES"),
            (
                "--max-inflight-body-bytes=100MiB",
                "MAX_INFLIGHT_BODY_BYTES",
            ),
            ("--max-body-bytes=300MiB", "MAX_INFLIGHT_BODY_BYTES"),
            ("--rust-log=ip_counter=loudest", "RUST_LOG"),
            ("--auth-token=a b", "AUTH_TOKEN"),
            ("--metrics-auth-token=,", "METRICS_AUTH_TOKEN"),
            ("--auth-token-file=/nonexistent/token", "AUTH_TOKEN_FILE"),
            ("--request-timeout=soon", "REQUEST_TIMEOUT"),
            ("--request-timeout=0s", "REQUEST_TIMEOUT"),
            ("--max-connections=0", "MAX_CONNECTIONS"),
            ("--rate-limit-per-ip=-1", "RATE_LIMIT_PER_IP"),
        ] {
            let msg = invalid(&[arg]);
            assert!(msg.contains(var), "{arg}: {msg}");
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
    }

    #[test]
    fn tokens_come_from_the_setting_and_the_file_and_are_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\nsecond\n").unwrap();
        let file_arg = format!("--auth-token-file={}", file.display());
        let cfg = parse(&["--auth-token=inline", &file_arg]).unwrap();
        let expected = Tokens::parse("inline,from-file,second").unwrap();
        assert_eq!(cfg.auth_token, Some(expected));
        assert!(!format!("{cfg:?}").contains("inline"));

        std::fs::write(&file, " \n").unwrap();
        let msg = invalid(&[&file_arg]);
        assert!(
            msg.contains("AUTH_TOKEN_FILE") && msg.contains("no token"),
            "{msg}"
        );
        let msg = invalid(&["--auth-token=sec ret"]);
        assert!(
            !msg.contains("sec ret") && msg.contains("(hidden)"),
            "{msg}"
        );
    }

    #[test]
    fn an_unknown_flag_is_refused() {
        let msg = invalid(&["--no-such-flag"]);
        assert!(msg.contains("--no-such-flag"), "{msg}");
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let Err(ConfigError::Info(help)) = parse(&["--help"]) else {
            panic!("--help should print help");
        };
        for var in [
            "LOG_PORT",
            "METRICS_PORT",
            "SERVER_HOST",
            "LOG_LEVEL",
            "RUST_LOG",
            "LOG_FORMAT",
            "MAX_BODY_BYTES",
            "AUTH_TOKEN",
            "AUTH_TOKEN_FILE",
            "METRICS_AUTH_TOKEN",
            "RATE_LIMIT_PER_IP",
            "REQUEST_TIMEOUT",
            "MAX_CONNECTIONS",
            "TLS_CERT",
            "TLS_KEY",
            "METRICS_TLS_CERT",
            "METRICS_TLS_KEY",
        ] {
            assert!(help.contains(var), "{var} missing from help");
        }
        assert!(help.contains("5000") && help.contains("9102") && help.contains("64MiB"));
    }

    fn invocation(args: &[&str]) -> Result<Invocation, ConfigError> {
        Invocation::from_args(std::iter::once("ip-counter").chain(args.iter().copied()))
    }

    #[test]
    fn no_subcommand_is_the_service_with_its_settings() {
        match invocation(&["--log-port=6000"]) {
            Ok(Invocation::Serve(cfg)) => assert_eq!(cfg.log_port, 6000),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            invocation(&["--log-port=70000"]),
            Err(ConfigError::Invalid(msg)) if msg.contains("LOG_PORT")
        ));
    }

    #[test]
    fn count_takes_files_format_and_json() {
        match invocation(&["count", "--format=text", "--json", "a.log", "b.log.gz"]) {
            Ok(Invocation::Count(args)) => {
                assert_eq!(args.files, [PathBuf::from("a.log"), "b.log.gz".into()]);
                assert_eq!(args.format, Some(crate::batch::LineFormat::Text));
                assert!(args.json);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            invocation(&["count", "--format=xml"]),
            Err(ConfigError::Invalid(_))
        ));
        // The service's flags belong to the service.
        assert!(matches!(
            invocation(&["--log-port=1", "count"]),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            invocation(&["count", "--log-port=1"]),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn send_needs_a_url_and_takes_its_tuning() {
        match invocation(&[
            "send",
            "--to=http://127.0.0.1:5000",
            "--batch-lines=500",
            "a.log",
        ]) {
            Ok(Invocation::Send(args)) => {
                assert_eq!(args.to, "http://127.0.0.1:5000");
                assert_eq!(
                    (args.batch_lines, args.concurrency, args.retries),
                    (500, 2, 5)
                );
                assert_eq!(args.files, [PathBuf::from("a.log")]);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &["send", "a.log"][..],
            &["send", "--to=x", "--batch-lines=0"],
            &["send", "--to=x", "--concurrency=0"],
        ] {
            assert!(
                matches!(invocation(bad), Err(ConfigError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn help_lists_the_subcommands() {
        let Err(ConfigError::Info(help)) = invocation(&["--help"]) else {
            panic!("--help should print help");
        };
        assert!(
            help.contains("count") && help.contains("LOG_PORT"),
            "{help}"
        );
    }

    /// Durations far beyond any sensible setting used to pass and then panic in deadline
    /// arithmetic (a snapshot interval of 300000000000y, a request timeout of 500000000000y).
    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("1ms"), Ok(MIN_DURATION));
        for absurd in ["300000000000y", "366d", "500us", "0s"] {
            let err = parse_duration(absurd).unwrap_err();
            assert!(err.contains("365 days"), "{absurd}: {err}");
        }
        for (setting, flag) in [
            ("SNAPSHOT_INTERVAL", "--snapshot-interval=300000000000y"),
            ("REQUEST_TIMEOUT", "--request-timeout=500000000000y"),
            ("FSYNC_INTERVAL", "--fsync-interval=1000y"),
        ] {
            let line = invalid(&[flag]);
            assert!(
                line.contains(setting) && line.contains("365 days"),
                "{line}"
            );
        }
    }

    #[test]
    fn sizes_accept_units_and_plain_bytes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("-1").is_err());
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert!(parse_size("1PiB").unwrap_err().contains("1TiB"));
        assert!(parse_size("0").is_err());
    }
}
