//! The command-line tools: [`count`] counts log files ([`logfile`]) through [`crate::batch`]
//! into a [`crate::counter::Counter`], the service's path without HTTP; [`send`] reads them the
//! same way and posts them in batches to a running service; [`data_dir`] verifies or repairs a
//! data directory offline.

//!
//! [`Invocation`] is what the command line asks for: the service with its [`Config`], or one of
//! the tools with its own arguments. A tool's arguments are parsed without the service's
//! settings, so a bad `LOG_PORT` in the environment never stops a `count`.

pub mod count;
pub mod data_dir;
pub mod follow;
pub mod logfile;
mod post;
pub mod send;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Config, ConfigError, Flags, to_config_error};
use count::CountArgs;
use data_dir::{RepairArgs, VerifyArgs};
use send::SendArgs;

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
    serve: Flags,

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
                } => return serve.validate().map(|c| Invocation::Serve(Box::new(c))),
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

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
}
