//! `ip-counter count [FILE...]`: the distinct client addresses in log files, without a server.
//!
//! Each input (a file, `.gz` or not, or standard input) is read in large chunks on a second
//! thread ([`crate::cli::logfile`]), split into lines and parsed exactly as `POST /logs` parses a
//! batch ([`crate::batch`]), into the same [`Counter`] the service uses: exact, or with
//! `--approx` the service's HyperLogLog sketch. The format is detected per input from its first
//! non-blank line unless `--format` forces it.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::thread;

use indicatif::ProgressBar;
use serde::Serialize;

use crate::batch::{self, LineFormat, Report};
use crate::cli::logfile::{self, Input};
use crate::counter::clock::SystemClock;
use crate::counter::{Counter, Observation};

/// Arguments of `ip-counter count`.
#[derive(Debug, Clone, clap::Args)]
pub struct CountArgs {
    /// Log files: NDJSON entries or access-log lines, plain or gzip; standard input when none or `-`
    pub files: Vec<PathBuf>,

    /// Line format of every input; detected per input from its first non-blank line when not given
    #[arg(long, value_enum)]
    pub format: Option<LineFormat>,

    /// Print {"total":..,"ipv4":..,"ipv6":..,"lines":..,"rejected":..} instead of the number
    #[arg(long)]
    pub json: bool,

    /// Estimate with a HyperLogLog sketch of 2^14 registers a family (0.81 % relative standard
    /// error) in fixed memory, for files too big to count exactly
    #[arg(long)]
    pub approx: bool,
}

/// What a count found over all inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Distinct addresses, both families.
    pub total: u64,
    /// Distinct IPv4 addresses (IPv4-mapped IPv6 included).
    pub ipv4: u64,
    /// Distinct IPv6 addresses.
    pub ipv6: u64,
    /// Non-blank lines read.
    pub lines: u64,
    /// Lines without a valid address.
    pub rejected: u64,
}

/// Why a count could not finish: an input that cannot be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("{input}: {source}")]
pub struct CountError {
    /// The input's name.
    pub input: String,
    /// What went wrong.
    pub source: io::Error,
}

/// Counts the distinct addresses of `inputs` into `counter`, calling `note` with each input's
/// report; returns the lines read and rejected over all inputs.
pub fn count_inputs(
    inputs: &[Input],
    format: Option<LineFormat>,
    counter: &Counter,
    progress: &ProgressBar,
    mut note: impl FnMut(&Input, &Report),
) -> Result<Summary, CountError> {
    let mut summary = Summary::default();
    for input in inputs {
        let report =
            count_input(input, format, counter, progress).map_err(|source| CountError {
                input: input.name(),
                source,
            })?;
        summary.lines += report.accepted + report.rejected;
        summary.rejected += report.rejected;
        note(input, &report);
    }
    let counts = counter.counts();
    summary.total = counts.total();
    summary.ipv4 = counts.ipv4;
    summary.ipv6 = counts.ipv6;
    Ok(summary)
}

/// Entries gathered before they go to the counter at once: runs this long touch most /16
/// blocks in address order (docs/DESIGN.md, "Counting files").
const INSERT_AT: usize = 1 << 19;

fn count_input(
    input: &Input,
    forced: Option<LineFormat>,
    counter: &Counter,
    progress: &ProgressBar,
) -> io::Result<Report> {
    let reader = input.open(progress)?;
    let mut format = forced;
    // Full runs of addresses to this thread, and their emptied buffers back for reuse.
    let (full_tx, full_rx) = mpsc::sync_channel::<Vec<Observation>>(1);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<Observation>>();
    thread::scope(|scope| {
        // Parsing on one thread, recording on this one, whole runs handed over, so that the
        // two stages overlap (docs/DESIGN.md, "Counting files").
        let parsing = scope.spawn(move || {
            let mut report = Report::default();
            let mut lines_before = 0;
            let mut run = Vec::with_capacity(INSERT_AT);
            logfile::for_each_chunk(reader, |chunk| {
                let format = *format.get_or_insert_with(|| LineFormat::detect(chunk));
                let batch = batch::parse_lines(format, chunk);
                run.extend_from_slice(&batch.observations);
                report.merge(batch.report, lines_before);
                lines_before += batch.newlines;
                if run.len() >= INSERT_AT {
                    let next = empty_rx
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(INSERT_AT));
                    // The receiver outlives this thread unless it panicked.
                    full_tx
                        .send(std::mem::replace(&mut run, next))
                        .map_err(io::Error::other)?;
                }
                Ok::<_, io::Error>(())
            })?;
            full_tx.send(run).map_err(io::Error::other)?;
            Ok(report)
        });
        for mut run in full_rx {
            // In memory, recording cannot fail.
            counter.record(&run).map_err(io::Error::other)?;
            run.clear();
            // The parser may have finished; then the buffer is simply dropped.
            let _ = empty_tx.send(run);
        }
        parsing.join().expect("parsing does not panic")
    })
}

/// Runs `ip-counter count`: prints the number (or the JSON summary) on stdout, a note per input
/// with rejected lines on stderr; exit 1 when an input cannot be read.
pub fn run(args: &CountArgs) -> ExitCode {
    let inputs = Input::from_args(&args.files);
    let progress = logfile::progress_bar(&inputs);
    let counter = match args.approx {
        true => Counter::approx(14, None, None, Arc::new(SystemClock)),
        false => Counter::in_memory(),
    };
    let result = count_inputs(
        &inputs,
        args.format,
        &counter,
        &progress,
        |input, report| {
            if let Some(first) = report.errors.first() {
                progress.suspend(|| {
                    eprintln!(
                        "ip-counter count: {}: {} of {} lines rejected (first: line {}: {})",
                        input.name(),
                        report.rejected,
                        report.accepted + report.rejected,
                        first.line,
                        first.message
                    );
                });
            }
        },
    );
    progress.finish_and_clear();
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("ip-counter count: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json {
        serde_json::to_string(&summary).expect("a summary serializes")
    } else {
        summary.total.to_string()
    };
    // A closed stdout (`| head`) is not worth a panic.
    let _ = writeln!(io::stdout(), "{text}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn count_text(files: &[(&str, &[u8])], format: Option<LineFormat>) -> (Summary, Vec<Report>) {
        let dir = tempfile::tempdir().unwrap();
        let inputs: Vec<Input> = files
            .iter()
            .map(|(name, data)| {
                let path = dir.path().join(name);
                std::fs::File::create(&path)
                    .unwrap()
                    .write_all(data)
                    .unwrap();
                Input::File(path)
            })
            .collect();
        let mut reports = Vec::new();
        let summary = count_inputs(
            &inputs,
            format,
            &Counter::in_memory(),
            &ProgressBar::hidden(),
            |_, r| reports.push(r.clone()),
        )
        .unwrap();
        (summary, reports)
    }

    #[test]
    fn formats_are_detected_per_file_and_addresses_are_shared() {
        let (summary, reports) = count_text(
            &[
                (
                    "a.ndjson",
                    b"\n{\"ip\":\"1.2.3.4\"}\n{\"ip\":\"::1\"}\n{\"ip\":\"x\"}\n",
                ),
                (
                    "access.log",
                    b"1.2.3.4 - - [x] \"GET /\" 200 1\r\n5.6.7.8 - - [x]\r\n- - - [x]\r\n",
                ),
            ],
            None,
        );
        assert_eq!(
            summary,
            Summary {
                total: 3,
                ipv4: 2,
                ipv6: 1,
                lines: 6,
                rejected: 2
            }
        );
        assert_eq!(reports[0].errors[0].line, 4);
        assert_eq!(reports[1].errors[0].line, 3);
    }

    #[test]
    fn a_forced_format_applies_to_every_file() {
        let (summary, _) = count_text(
            &[("a", b"{\"ip\":\"1.2.3.4\"}\n1.2.3.5\n")],
            Some(LineFormat::Text),
        );
        assert_eq!((summary.total, summary.rejected), (1, 1));
    }

    #[test]
    fn line_numbers_run_on_across_chunks() {
        // More than one 4 MiB chunk, with the one bad line near the end.
        let mut data = b"10.0.0.1 - - [x] \"GET / HTTP/1.1\" 200 1\n".repeat(200_000);
        data.extend_from_slice(b"bad - - [x]\n10.0.0.2\n");
        let (summary, reports) = count_text(&[("big.log", &data)], None);
        assert_eq!(
            (summary.total, summary.lines, summary.rejected),
            (2, 200_002, 1)
        );
        assert_eq!(reports[0].errors[0].line, 200_001);
    }

    #[test]
    fn a_missing_file_names_itself() {
        let err = count_inputs(
            &[Input::File("/nonexistent/access.log".into())],
            None,
            &Counter::in_memory(),
            &ProgressBar::hidden(),
            |_, _| {},
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/access.log: "),
            "{err}"
        );
    }
}
