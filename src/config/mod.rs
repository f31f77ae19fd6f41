//! Settings: command-line flags and environment variables ([`Flags`], raw), checked and read
//! into one [`Config`] before anything binds. A flag wins over its variable. The only I/O is
//! reading the files settings name (`AUTH_TOKEN_FILE`, the TLS certificates and keys), so that a
//! missing or broken file is a bad setting like any other.
//!
//! [`Config`] holds each part's settings in that part's own type ([`crate::http::Settings`],
//! [`crate::wal::Settings`]); which subcommand runs is [`crate::cli::Invocation`]'s.

mod flags;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

use crate::counter::auto::AutoSettings;
use crate::counter::shared::RedisSettings;
use crate::counter::windows::{MAX_SKEW_STEPS, WindowSettings};
use crate::http::auth::Tokens;
use crate::http::tls::Tls;
use crate::{http, wal};
pub(crate) use flags::to_config_error;
pub use flags::{CountMode, Flags, LogFormat, LogLevel, Store, Switch};

/// Exit status for a bad setting, as for any usage error.
pub const USAGE_EXIT_CODE: u8 = 2;

/// Every setting of the service, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SERVER_HOST`: the address both listeners bind to.
    pub server_host: IpAddr,
    /// `LOG_PORT`: the ingest listener's port.
    pub log_port: u16,
    /// `METRICS_PORT`: the metrics listener's port.
    pub metrics_port: u16,
    /// `LOG_LEVEL`.
    pub log_level: LogLevel,
    /// `RUST_LOG`, which overrides `LOG_LEVEL`.
    pub rust_log: Option<String>,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// The data directory's settings; `None` with `PERSISTENCE=off`.
    pub persistence: Option<wal::Settings>,
    /// The time windows; `None` with `WINDOWS=` (empty).
    pub windows: Option<WindowSettings>,
    /// `STORE=redis`: the shared store's settings.
    pub redis: Option<RedisSettings>,
    /// `COUNT_MODE`, with what its sketch needs.
    pub counting: Counting,
    /// The listeners' and handlers' settings.
    pub http: http::Settings,
}

/// How the service counts (`COUNT_MODE`).
#[derive(Debug, Clone)]
pub enum Counting {
    /// Every address.
    Exact,
    /// A sketch of `2^lg_k` registers a family.
    Approx {
        /// `HLL_PRECISION`.
        lg_k: u8,
    },
    /// Exact until a budget, then the sketch.
    Auto(AutoSettings),
}

/// What stops the program before it starts: a bad setting, or a request for help/version text.
#[derive(Debug)]
pub enum ConfigError {
    /// `--help` or `--version`: print the text and exit 0.
    Info(String),
    /// A bad setting: print the one-line message and exit with [`USAGE_EXIT_CODE`].
    Invalid(String),
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
        Flags::try_parse_from(args)
            .map_err(to_config_error)?
            .validate()
    }
}

/// Whether `url` is one this build can connect to; the reason, without the URL (it may hold a
/// password), when not.
fn check_redis_url(url: &str) -> Result<(), String> {
    match redis::Client::open(url) {
        Ok(_) if url.starts_with("redis://") || url.starts_with("rediss://") => Ok(()),
        Ok(_) => Err("not a redis:// or rediss:// URL".into()),
        Err(e) => Err(format!(
            "not a redis:// or rediss:// URL ({})",
            e.category()
        )),
    }
}

impl Flags {
    /// Checks the settings against each other, then reads the files they name (the token file
    /// and the certificates) into the validated [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        // A gzip body and its decoded copy must fit, or the largest would wait forever.
        if self.max_inflight_body_bytes / 2 < self.max_body_bytes {
            return Err(ConfigError::Invalid(format!(
                "error: invalid value {} for MAX_INFLIGHT_BODY_BYTES (--max-inflight-body-bytes): \
                 must be at least twice MAX_BODY_BYTES ({})",
                self.max_inflight_body_bytes, self.max_body_bytes
            )));
        }
        let ingest_tokens = self.tokens()?;
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
        let ingest_tls = load(&self.tls_cert, &self.tls_key, "TLS_CERT", "--tls-cert")?;
        let metrics_tls = load(
            &self.metrics_tls_cert,
            &self.metrics_tls_key,
            "METRICS_TLS_CERT",
            "--metrics-tls-cert",
        )?;
        let persistence = (self.persistence == Switch::On).then_some(wal::Settings {
            dir: self.data_dir,
            durability: self.durability,
            fsync_interval: self.fsync_interval,
            snapshot_interval: self.snapshot_interval,
        });
        let windows = (!self.windows.0.is_empty()).then_some(WindowSettings {
            windows: self.windows.0,
            max_clock_skew: self.max_clock_skew,
        });
        if let Some(w) = &windows
            && self.max_clock_skew.as_secs() / w.step_secs() > MAX_SKEW_STEPS
        {
            return Err(ConfigError::Invalid(format!(
                "error: invalid value for MAX_CLOCK_SKEW (--max-clock-skew): more than \
                 {MAX_SKEW_STEPS} steps of {}s (the shortest window / 60)",
                w.step_secs()
            )));
        }
        let redis = match (self.store, self.redis_url) {
            (Store::Local, _) => None,
            (Store::Redis, None) => {
                return Err(ConfigError::Invalid(
                    "error: STORE=redis (--store) needs REDIS_URL (--redis-url)".into(),
                ));
            }
            (Store::Redis, Some(_)) if persistence.is_none() => {
                return Err(ConfigError::Invalid(
                    "error: STORE=redis (--store) needs PERSISTENCE=on: the data directory \
                     holds what Redis has not confirmed"
                        .into(),
                ));
            }
            (Store::Redis, Some(urls)) => {
                let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
                if let Some(reason) = urls.iter().find_map(|u| check_redis_url(u).err()) {
                    return Err(ConfigError::Invalid(format!(
                        "error: invalid value for REDIS_URL (--redis-url): {reason}"
                    )));
                }
                Some(RedisSettings {
                    urls,
                    prefix: self.redis_key_prefix,
                })
            }
        };
        let counting = match self.count_mode {
            CountMode::Exact => Counting::Exact,
            mode if redis.is_some() => {
                let mode = if mode == CountMode::Auto {
                    "auto"
                } else {
                    "approx"
                };
                return Err(ConfigError::Invalid(format!(
                    "error: COUNT_MODE={mode} (--count-mode) cannot be shared yet: use it with \
                     STORE=local"
                )));
            }
            CountMode::Approx => Counting::Approx {
                lg_k: self.hll_precision,
            },
            CountMode::Auto => Counting::Auto(AutoSettings {
                lg_k: self.hll_precision,
                budget: self.memory_budget,
            }),
        };
        Ok(Config {
            counting,
            redis,
            windows,
            server_host: self.server_host,
            log_port: self.log_port,
            metrics_port: self.metrics_port,
            log_level: self.log_level,
            rust_log: self.rust_log,
            log_format: self.log_format,
            persistence,
            http: http::Settings {
                max_body_bytes: self.max_body_bytes,
                max_inflight_body_bytes: self.max_inflight_body_bytes,
                request_timeout: self.request_timeout,
                max_connections: self.max_connections,
                rate_limit_per_ip: self.rate_limit_per_ip,
                proxy_protocol: self.proxy_protocol == Switch::On,
                ingest_tokens,
                metrics_tokens: self.metrics_auth_token,
                ingest_tls,
                metrics_tls,
            },
        })
    }

    /// `AUTH_TOKEN`'s tokens and `AUTH_TOKEN_FILE`'s.
    fn tokens(&self) -> Result<Option<Tokens>, ConfigError> {
        let Some(path) = &self.auth_token_file else {
            return Ok(self.auth_token.clone());
        };
        let bad = |reason: String| {
            ConfigError::Invalid(format!(
                "error: invalid value {:?} for AUTH_TOKEN_FILE (--auth-token-file): {reason}",
                path.display().to_string()
            ))
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let from_file = Tokens::parse(&text).map_err(bad)?;
        Ok(Some(match self.auth_token.clone() {
            Some(tokens) => tokens.with(from_file),
            None => from_file,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::flags::{MAX_DURATION, MIN_DURATION, parse_duration, parse_size};
    use super::*;
    use crate::wal::Durability;

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
        assert_eq!(cfg.http.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn persistence_defaults_and_flags() {
        let settings = parse(&[]).unwrap().persistence.expect("on by default");
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
        .persistence
        .unwrap();
        assert_eq!(settings.dir, PathBuf::from("/var/lib/x"));
        assert_eq!(settings.durability, Durability::Fsync);
        assert_eq!(settings.fsync_interval, Duration::from_millis(250));
        assert_eq!(settings.snapshot_interval, Duration::from_secs(3600));
        assert!(parse(&["--persistence=off"]).unwrap().persistence.is_none());
        assert!(invalid(&["--persistence=maybe"]).contains("PERSISTENCE (--persistence)"));
        assert!(invalid(&["--snapshot-interval=0s"]).contains("SNAPSHOT_INTERVAL"));
    }

    #[test]
    fn store_redis_needs_a_url_and_a_data_directory() {
        assert!(parse(&[]).unwrap().redis.is_none());
        let cfg = parse(&["--store=redis", "--redis-url=redis://:pw@127.0.0.1:6379"]).unwrap();
        let redis = cfg.redis.unwrap();
        assert_eq!(redis.urls, ["redis://:pw@127.0.0.1:6379"]);
        assert_eq!(redis.prefix, "ipc");
        let seeds = parse(&["--store=redis", "--redis-url=redis://a:1, redis://b:2"]).unwrap();
        assert_eq!(seeds.redis.unwrap().urls, ["redis://a:1", "redis://b:2"]);
        assert!(invalid(&["--store=redis"]).contains("REDIS_URL"));
        let no_dir = invalid(&[
            "--store=redis",
            "--redis-url=redis://h",
            "--persistence=off",
        ]);
        assert!(no_dir.contains("PERSISTENCE=on"), "{no_dir}");
        assert!(parse(&["--store=redis", "--redis-url=rediss://h:6380"]).is_ok());
        for url in ["http://h", "redis://a,http://b"] {
            let msg = invalid(&["--store=redis", &format!("--redis-url={url}")]);
            assert!(msg.contains("REDIS_URL") && !msg.contains(url), "{msg}");
        }
    }

    #[test]
    fn proxy_protocol_is_off_unless_asked_and_only_on_the_ingest_listener() {
        assert!(!parse(&[]).unwrap().http.proxy_protocol);
        assert!(parse(&["--proxy-protocol=on"]).unwrap().http.proxy_protocol);
        assert!(invalid(&["--proxy-protocol=v2"]).contains("PROXY_PROTOCOL"));
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
        assert_eq!(cfg.http.ingest_tokens, Some(expected));
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
            "WINDOWS",
            "MAX_CLOCK_SKEW",
            "AUTH_TOKEN",
            "AUTH_TOKEN_FILE",
            "METRICS_AUTH_TOKEN",
            "RATE_LIMIT_PER_IP",
            "REQUEST_TIMEOUT",
            "MAX_CONNECTIONS",
            "PROXY_PROTOCOL",
            "COUNT_MODE",
            "HLL_PRECISION",
            "STORE",
            "REDIS_URL",
            "REDIS_KEY_PREFIX",
            "TLS_CERT",
            "TLS_KEY",
            "METRICS_TLS_CERT",
            "METRICS_TLS_KEY",
        ] {
            assert!(help.contains(var), "{var} missing from help");
        }
        assert!(help.contains("5000") && help.contains("9102") && help.contains("64MiB"));
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
