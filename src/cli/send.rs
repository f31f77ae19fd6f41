//! `ip-counter send [FILE...] --to URL`: backfills a running service from log files.
//!
//! The inputs are read like `count` reads them ([`crate::cli::logfile`]); their lines go, unchanged,
//! in batches of `--batch-lines` lines to `POST /logs`: NDJSON as `application/x-ndjson`,
//! access-log text as `text/plain`, so the service validates every line exactly as it would
//! from a shipper and its line numbers map back to the file. Each batch is gzip-compressed and
//! posted by one of `--concurrency` threads; connection errors, 429 and 5xx are retried with
//! exponential backoff, any other 4xx stops the run with the server's message.
//!
//! With `--follow`, and for standard input, lines go as they are written instead
//! ([`crate::cli::follow`]). Exit status: 0 when every line was accepted, 1 when the run
//! stopped early, 2 for a usage error, 3 when it finished but the service rejected lines.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use indicatif::ProgressBar;

use super::follow::{self, Source};
pub use super::post::SendError;
use super::post::{Job, Sender, Sent, count_lines};
use crate::batch::{self, LineFormat};
use crate::cli::logfile::{self, Input};

/// Arguments of `ip-counter send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Log files: NDJSON entries or access-log lines, plain or gzip; standard input when none or `-`
    pub files: Vec<PathBuf>,

    /// Keep reading the files as they grow, as `tail -F` does (through rotation by rename or
    /// truncation, and files that appear later), sending a batch when it is full or a second old
    #[arg(long, requires = "files")]
    pub follow: bool,

    /// With --follow: where each file's acknowledged position is kept, so that a restart goes
    /// on from there
    #[arg(long, value_name = "FILE", default_value = "ip-counter-send.state")]
    pub state: PathBuf,

    /// The service: its base URL (`http://host:5000`, `/logs` is appended) or the full
    /// `POST /logs` URL; `https://` for a service with TLS_CERT
    #[arg(long, value_name = "URL")]
    pub to: String,

    /// Line format of every input; detected per input from its first non-blank line when not given
    #[arg(long, value_enum)]
    pub format: Option<LineFormat>,

    /// Lines per request
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_lines: u32,

    /// Requests in flight at once
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,

    /// Retries of a batch after a connection error, 429 or 5xx (waiting 0.2s, 0.4s, 0.8s, ...)
    #[arg(long, default_value_t = 5)]
    pub retries: u32,

    /// Print {"lines":..,"requests":..,"accepted":..,"rejected":..,"unique_ips":..}
    #[arg(long)]
    pub json: bool,

    /// Bearer token for a service that sets AUTH_TOKEN
    #[arg(long, env = "IP_COUNTER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// PEM file of the certificate(s) to trust for an https URL (a self-signed or private CA);
    /// without it, the public web PKI roots
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<PathBuf>,
}

/// The sender `args` ask for; fails when `--cacert` cannot be read.
fn sender(args: &SendArgs) -> Result<Sender, SendError> {
    Sender::new(
        &args.to,
        args.token.as_deref(),
        args.cacert.as_deref(),
        args.retries,
        u64::from(args.batch_lines),
        args.format,
    )
}

/// Sends every line of `inputs` to the service; `note` receives the rejected lines the
/// service listed, as `input:line: message`.
pub fn send_inputs(
    inputs: &[Input],
    args: &SendArgs,
    progress: &ProgressBar,
    note: impl Fn(&str) + Sync,
) -> Result<Sent, SendError> {
    let sender = sender(args)?;
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(usize::from(args.concurrency));
    let jobs_rx = Mutex::new(jobs_rx);
    let stop = AtomicBool::new(false);
    let failure = Mutex::new(None::<SendError>);
    let totals = Mutex::new(Sent::default());

    thread::scope(|scope| {
        for _ in 0..args.concurrency {
            scope.spawn(|| {
                loop {
                    let job = jobs_rx.lock().expect("no thread panics").recv();
                    let Ok(job) = job else { return };
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = sender.post(&job, &totals, &note) {
                        stop.store(true, Ordering::Relaxed);
                        failure.lock().expect("no thread panics").get_or_insert(e);
                    }
                }
            });
        }
        let read = read_batches(inputs, args, progress, &stop, |job| {
            // Fails only when every sending thread is gone, which `stop` already reports.
            let _ = jobs_tx.send(job);
        });
        drop(jobs_tx);
        if let Err(e) = read {
            stop.store(true, Ordering::Relaxed);
            failure.lock().expect("no thread panics").get_or_insert(e);
        }
    });
    match failure.into_inner().expect("no thread panics") {
        Some(e) => Err(e),
        None => Ok(totals.into_inner().expect("no thread panics")),
    }
}

/// Why reading an input ended early.
enum Interrupted {
    /// A sending thread failed; its error is the one to report.
    Stopped,
    Io(io::Error),
}

impl From<io::Error> for Interrupted {
    fn from(e: io::Error) -> Self {
        Interrupted::Io(e)
    }
}

/// Reads the inputs and cuts their lines into jobs of at most `args.batch_lines` lines; a job
/// never spans two inputs. Stops early when `stop` is set.
fn read_batches(
    inputs: &[Input],
    args: &SendArgs,
    progress: &ProgressBar,
    stop: &AtomicBool,
    mut submit: impl FnMut(Job),
) -> Result<(), SendError> {
    let per_batch = u64::from(args.batch_lines);
    for input in inputs {
        let name = input.name();
        let input_error = |source| SendError::Input {
            input: name.clone(),
            source,
        };
        let reader = input.open(progress).map_err(input_error)?;
        let mut format = args.format;
        let mut body = Vec::new();
        let mut lines_in_body = 0u64;
        let mut first_line = 1u64;
        let result = logfile::for_each_chunk(reader, |mut chunk: &[u8]| {
            if format.is_none() {
                format = batch::lines(chunk)
                    .map(|(_, line)| line)
                    .find(|line| !batch::is_blank(line))
                    .map(LineFormat::detect);
            }
            while !chunk.is_empty() {
                if stop.load(Ordering::Relaxed) {
                    return Err(Interrupted::Stopped);
                }
                let wanted = (per_batch - lines_in_body) as usize;
                let (take, lines) = match memchr::memchr_iter(b'\n', chunk).nth(wanted - 1) {
                    Some(end) => (end + 1, wanted as u64),
                    None => (chunk.len(), count_lines(chunk)),
                };
                body.extend_from_slice(&chunk[..take]);
                lines_in_body += lines;
                chunk = &chunk[take..];
                if lines_in_body == per_batch {
                    submit(Job {
                        body: std::mem::take(&mut body),
                        format: format.unwrap_or(LineFormat::Text),
                        input: name.clone(),
                        first_line,
                    });
                    first_line += lines_in_body;
                    lines_in_body = 0;
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(Interrupted::Stopped) => return Ok(()),
            Err(Interrupted::Io(e)) => return Err(input_error(e)),
        }
        if !body.is_empty() {
            submit(Job {
                body,
                format: format.unwrap_or(LineFormat::Text),
                input: name.clone(),
                first_line,
            });
        }
    }
    Ok(())
}

/// Runs `ip-counter send`: prints what was sent and the service's final count on stdout,
/// the first rejected lines on stderr; the exit status says whether every line was accepted.
pub fn run(args: &SendArgs) -> ExitCode {
    let inputs = Input::from_args(&args.files);
    let note = |line: &str| eprintln!("ip-counter send: rejected: {line}");
    let result = match streamed(args, &inputs) {
        Some(source) => streaming(args, source, note),
        None => {
            let progress = logfile::progress_bar(&inputs);
            let sent = send_inputs(&inputs, args, &progress, |line| {
                progress.suspend(|| note(line))
            });
            progress.finish_and_clear();
            sent
        }
    };
    let sent = match result {
        Ok(sent) => sent,
        Err(e) => {
            eprintln!("ip-counter send: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json {
        serde_json::to_string(&sent).expect("a summary serializes")
    } else {
        let plural = if sent.requests == 1 { "" } else { "s" };
        format!(
            "sent {} lines in {} request{plural}: {} accepted, {} rejected; unique_ips {}",
            sent.lines, sent.requests, sent.accepted, sent.rejected, sent.unique_ips
        )
    };
    let _ = writeln!(io::stdout(), "{text}");
    if sent.rejected > 0 {
        ExitCode::from(EXIT_REJECTED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The exit status of a run that finished with lines the service rejected.
pub const EXIT_REJECTED: u8 = 3;

/// What to stream rather than read to the end: the files with `--follow`, standard input
/// alone; `None` for files read once (posted `--concurrency` at a time).
fn streamed(args: &SendArgs, inputs: &[Input]) -> Option<Source> {
    if args.follow {
        let paths = inputs.iter().filter_map(|input| match input {
            Input::File(path) => Some(path.clone()),
            Input::Stdin => None,
        });
        return Some(Source::Files {
            paths: paths.collect(),
            state: args.state.clone(),
        });
    }
    (inputs == [Input::Stdin]).then_some(Source::Stdin)
}

/// Streams `source` until it ends or SIGINT/SIGTERM (a second one exits at once).
fn streaming(args: &SendArgs, source: Source, note: impl Fn(&str)) -> Result<Sent, SendError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let registered = signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()));
        registered.map_err(|source| SendError::Input {
            input: "signal handlers".into(),
            source,
        })?;
    }
    follow::stream(source, &sender(args)?, stop, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(data: &[u8], batch_lines: u32) -> Vec<(u64, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.log");
        std::fs::write(&path, data).unwrap();
        let args = SendArgs {
            files: vec![path.clone()],
            follow: false,
            state: PathBuf::new(),
            to: String::new(),
            format: None,
            batch_lines,
            concurrency: 1,
            retries: 0,
            json: false,
            token: None,
            cacert: None,
        };
        let mut jobs = Vec::new();
        read_batches(
            &[Input::File(path)],
            &args,
            &ProgressBar::hidden(),
            &AtomicBool::new(false),
            |job| jobs.push((job.first_line, job.body)),
        )
        .unwrap();
        jobs
    }

    #[test]
    fn batches_have_the_asked_number_of_lines_and_their_first_line() {
        let data = b"1.1.1.1\n\n1.1.1.2\n1.1.1.3\n1.1.1.4\n1.1.1.5";
        assert_eq!(
            jobs(data, 2),
            [
                (1, b"1.1.1.1\n\n".to_vec()),
                (3, b"1.1.1.2\n1.1.1.3\n".to_vec()),
                (5, b"1.1.1.4\n1.1.1.5".to_vec()),
            ]
        );
        assert_eq!(jobs(data, 100), [(1, data.to_vec())]);
        assert!(jobs(b"", 10).is_empty());
    }

    #[test]
    fn batches_span_chunks() {
        let line = b"{\"ip\":\"10.0.0.1\"}\n";
        let data = line.repeat(700_000); // about 12 MiB: several 4 MiB chunks
        let jobs = jobs(&data, 100_000);
        assert_eq!(jobs.len(), 7);
        for (i, (first, body)) in jobs.iter().enumerate() {
            assert_eq!(*first, i as u64 * 100_000 + 1);
            assert_eq!(body.len(), line.len() * 100_000);
        }
    }
}
