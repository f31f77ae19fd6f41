//! Many entries at once: the batch bodies of `POST /logs` and the lines of log files.
//!
//! This module owns the framing around [`crate::parse`]: splitting a body into lines (NDJSON,
//! access-log text) or array elements, skipping blank lines, numbering lines from 1, gunzipping
//! under a size limit, and the per-batch [`Report`] (accepted, rejected by reason, at most
//! [`MAX_LISTED_ERRORS`] line errors). Each line is parsed on its own, so a bad line never
//! affects the good ones. No allocation per entry: lines are slices of the body, addresses go
//! into one `Vec` per batch, and only a rejected line costs an error message.

use std::io::Read;

use flate2::read::MultiGzDecoder;
use serde::Serialize;
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::counter::Observation;
use crate::parse::{EntryError, access_line_time, parse_access_line, parse_entry};

/// Most line errors a [`Report`] lists; the rest are only counted.
pub const MAX_LISTED_ERRORS: usize = 100;

/// What one line of a line-oriented body or file holds (also the `--format` of the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineFormat {
    /// One JSON log entry a line (NDJSON / JSON Lines), each validated like a single entry.
    Ndjson,
    /// Access-log text: the first whitespace-separated field is the client address.
    Text,
}

impl LineFormat {
    /// Guesses the format from the first non-blank line: JSON if it starts with `{`, text
    /// otherwise (also when there is no such line).
    pub fn detect(start: &[u8]) -> LineFormat {
        let first = lines(start)
            .map(|(_, line)| line.trim_ascii())
            .find(|line| !line.is_empty());
        match first {
            Some(line) if line.starts_with(b"{") => LineFormat::Ndjson,
            _ => LineFormat::Text,
        }
    }

    /// The address of one non-blank line.
    pub fn parse_line(self, line: &[u8]) -> Result<Observation, EntryError> {
        match self {
            LineFormat::Ndjson => parse_entry(line),
            LineFormat::Text => parse_access_line(line).map(|ip| Observation {
                ip,
                time: access_line_time(line),
            }),
        }
    }
}

/// The lines of `body` with their numbers from 1, split at `\n` (a trailing `\r` stays in the
/// line; both parsers treat it as whitespace). A final line without `\n` is a line.
pub fn lines(body: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', body).chain((!body.is_empty()).then_some(body.len()));
    ends.enumerate().map(move |(i, end)| {
        let line = &body[start..end];
        start = end + 1;
        (i as u64 + 1, line)
    })
}

/// Whether a line holds nothing but whitespace; such lines are skipped, not rejected.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// One rejected line, as the batch reply lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// Line number from 1 (for a JSON array: the element's position from 1).
    pub line: u64,
    /// The error code, as a single entry would be answered with.
    pub error: &'static str,
    /// Human-readable reason.
    pub message: String,
}

/// The outcome of the entries of one batch or file, without the addresses themselves.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries with a valid address.
    pub accepted: u64,
    /// Entries refused.
    pub rejected: u64,
    /// Refused entries by error code, each code once.
    pub rejected_by_reason: Vec<(&'static str, u64)>,
    /// The first [`MAX_LISTED_ERRORS`] refusals.
    pub errors: Vec<LineError>,
}

impl Report {
    /// Records the result of the entry at `line`; returns it when it was accepted.
    #[inline]
    pub fn record(
        &mut self,
        line: u64,
        result: Result<Observation, EntryError>,
    ) -> Option<Observation> {
        match result {
            Ok(observation) => {
                self.accepted += 1;
                Some(observation)
            }
            Err(e) => {
                self.reject(line, &e);
                None
            }
        }
    }

    /// Kept out of line so that the accepting path of [`Report::record`] inlines into the
    /// per-line loops (docs/DESIGN.md, "Parsing").
    #[cold]
    #[inline(never)]
    fn reject(&mut self, line: u64, e: &EntryError) {
        self.rejected += 1;
        let code = e.code();
        match self.rejected_by_reason.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.rejected_by_reason.push((code, 1)),
        }
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(LineError {
                line,
                error: code,
                message: e.to_string(),
            });
        }
    }

    /// Adds the report of the lines that follow this one's, whose numbers start after
    /// `lines_before` lines; keeps the first [`MAX_LISTED_ERRORS`] errors of both.
    pub fn merge(&mut self, later: Report, lines_before: u64) {
        self.accepted += later.accepted;
        self.rejected += later.rejected;
        for (code, n) in later.rejected_by_reason {
            match self.rejected_by_reason.iter_mut().find(|(c, _)| *c == code) {
                Some((_, total)) => *total += n,
                None => self.rejected_by_reason.push((code, n)),
            }
        }
        let room = MAX_LISTED_ERRORS.saturating_sub(self.errors.len());
        self.errors
            .extend(later.errors.into_iter().take(room).map(|e| LineError {
                line: e.line + lines_before,
                ..e
            }));
    }
}

/// The body types of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFormat {
    /// Lines of one kind.
    Lines(LineFormat),
    /// A JSON array of log entries.
    JsonArray,
}

/// A parsed batch: the valid entries in body order and the report.
#[derive(Debug, Default)]
pub struct Batch {
    /// Every accepted entry, repeated addresses included.
    pub observations: Vec<Observation>,
    /// Counts and listed errors.
    pub report: Report,
    /// Line breaks in the body: how many lines the numbers of a body that follows this one
    /// start after. Zero for a JSON array.
    pub newlines: u64,
}

impl Batch {
    /// An empty batch with room for the addresses `body` probably holds.
    fn with_capacity_for(body: &[u8]) -> Batch {
        // About one entry per 64 bytes of body; a guess, so that the Vec rarely regrows.
        Batch {
            observations: Vec::with_capacity(body.len() / 64 + 1),
            ..Batch::default()
        }
    }
}

/// Why a batch body could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Decoded, the body is larger than the limit.
    #[error("request body exceeds the limit of {limit} bytes once decompressed")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Broken compression, or a JSON body that is not an array of values.
    #[error("{0}")]
    Unreadable(String),
}

/// Parses every entry of a batch body. Fails only when the body as a whole cannot be read (an
/// array that is not JSON); single bad entries are recorded in the report.
pub fn parse_batch(format: BatchFormat, body: &[u8]) -> Result<Batch, BodyError> {
    match format {
        BatchFormat::Lines(format) => Ok(parse_lines(format, body)),
        BatchFormat::JsonArray => {
            let mut batch = Batch::with_capacity_for(body);
            let Batch {
                observations,
                report,
                ..
            } = &mut batch;
            each_element(body, |n, element| {
                let result = parse_entry(element.get().as_bytes());
                observations.extend(report.record(n, result));
            })
            .map_err(|e| BodyError::Unreadable(format!("not a JSON array of log entries: {e}")))?;
            Ok(batch)
        }
    }
}

/// Parses every non-blank line of `body` on this thread; [`parse_batch`] for lines, which
/// cannot fail.
pub fn parse_lines(format: LineFormat, body: &[u8]) -> Batch {
    let mut batch = Batch::with_capacity_for(body);
    let mut last = 0;
    for (n, line) in lines(body) {
        last = n;
        if !is_blank(line) {
            let result = format.parse_line(line);
            batch.observations.extend(batch.report.record(n, result));
        }
    }
    // `lines` gives one line more than there are line breaks: the one after the last.
    batch.newlines = last.saturating_sub(1);
    batch
}

/// A batch counted.
#[derive(Debug, Default)]
pub struct Counted {
    /// Accepted and rejected entries, and the listed errors.
    pub report: Report,
    /// Addresses the counter had not seen before.
    pub new_ips: u64,
}

/// Parses a batch body and counts its entries with one call of `record` (which returns how
/// many addresses were new), so that a batch is counted whole or not at all: an error from
/// `record` fails it. A large line-oriented body is parsed on two threads.
pub fn count_batch<E: From<BodyError>>(
    format: BatchFormat,
    body: &[u8],
    record: impl FnOnce(&[Observation]) -> Result<u64, E>,
) -> Result<Counted, E> {
    let Batch {
        observations,
        report,
        ..
    } = match format {
        BatchFormat::Lines(format) => parse_lines_parallel(format, body),
        BatchFormat::JsonArray => parse_batch(format, body)?,
    };
    let new_ips = record(&observations)?;
    Ok(Counted { report, new_ips })
}

/// Bodies at least this large are split at a line boundary and their halves parsed on two
/// threads: below it a thread costs more than it saves (docs/DESIGN.md, "Parsing").
const PARALLEL_MIN_BYTES: usize = 256 << 10;

/// Parses the lines of `body`, in two halves on two threads when it is large; the line numbers
/// are the body's, however it was split.
fn parse_lines_parallel(format: LineFormat, body: &[u8]) -> Batch {
    let split = (body.len() >= PARALLEL_MIN_BYTES)
        .then(|| memchr::memchr(b'\n', &body[body.len() / 2..]))
        .flatten()
        .map(|i| body.len() / 2 + i + 1);
    let Some(split) = split else {
        return parse_lines(format, body);
    };
    let (head, tail) = body.split_at(split);
    let (mut head, tail) = std::thread::scope(|scope| {
        let tail = scope.spawn(|| parse_lines(format, tail));
        let head = parse_lines(format, head);
        (head, tail.join().expect("parsing does not panic"))
    });
    head.observations.extend_from_slice(&tail.observations);
    head.report.merge(tail.report, head.newlines);
    head.newlines += tail.newlines;
    head
}

/// Calls `f` with each element of a JSON array (numbered from 1) as raw JSON, one at a time,
/// without building a tree of the whole array.
fn each_element<'de>(
    body: &'de [u8],
    f: impl FnMut(u64, &'de RawValue),
) -> Result<(), serde_json::Error> {
    struct Elements<F>(F);

    impl<'de, F: FnMut(u64, &'de RawValue)> Visitor<'de> for Elements<F> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array")
        }

        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            let mut n = 0;
            while let Some(element) = seq.next_element::<&'de RawValue>()? {
                n += 1;
                (self.0)(n, element);
            }
            Ok(())
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    (&mut de).deserialize_seq(Elements(f))?;
    de.end()
}

/// Decompresses a gzip body (one or more members) while it stays within `limit` bytes; stops
/// as soon as it would exceed it, so a decompression bomb costs at most `limit` bytes of memory.
pub fn gunzip_limited(compressed: &[u8], limit: u64) -> Result<Vec<u8>, BodyError> {
    let expected = compressed.len().saturating_mul(4);
    let mut out = Vec::with_capacity(expected.min(usize::try_from(limit).unwrap_or(usize::MAX)));
    MultiGzDecoder::new(compressed)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Unreadable(format!("broken gzip encoding: {e}")))?;
    if out.len() as u64 > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use proptest::prelude::*;

    use super::*;
    use std::net::IpAddr;

    use crate::counter::Counter;

    /// The addresses of a batch's entries, in order.
    fn ips(batch: &Batch) -> Vec<IpAddr> {
        batch.observations.iter().map(|o| o.ip).collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lines_of(body: &str) -> Vec<(u64, String)> {
        lines(body.as_bytes())
            .map(|(n, l)| (n, String::from_utf8(l.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn a_batch_knows_its_line_breaks() {
        for (body, newlines) in [
            ("", 0),
            ("a", 0),
            ("a\n", 1),
            ("a\nb", 1),
            ("\n\n", 2),
            ("a\n\nb\n", 3),
        ] {
            let batch = parse_lines(LineFormat::Text, body.as_bytes());
            assert_eq!(batch.newlines, newlines, "{body:?}");
        }
    }

    #[test]
    fn lines_are_numbered_from_one_and_keep_blank_ones() {
        let own = |v: &[(u64, &str)]| -> Vec<(u64, String)> {
            v.iter().map(|&(n, s)| (n, s.to_owned())).collect()
        };
        assert_eq!(lines_of(""), own(&[]));
        assert_eq!(lines_of("a"), own(&[(1, "a")]));
        assert_eq!(lines_of("a\n"), own(&[(1, "a"), (2, "")]));
        assert_eq!(lines_of("a\n\nb"), own(&[(1, "a"), (2, ""), (3, "b")]));
        assert_eq!(
            lines_of("a\r\nb\r\n"),
            own(&[(1, "a\r"), (2, "b\r"), (3, "")])
        );
        assert_eq!(lines_of("\n"), own(&[(1, ""), (2, "")]));
    }

    fn parse(format: BatchFormat, body: &str) -> Batch {
        parse_batch(format, body.as_bytes()).unwrap()
    }

    const NDJSON: BatchFormat = BatchFormat::Lines(LineFormat::Ndjson);
    const TEXT: BatchFormat = BatchFormat::Lines(LineFormat::Text);

    #[test]
    fn ndjson_good_and_bad_lines_with_their_numbers() {
        let body = "{\"ip\":\"1.2.3.4\"}\r\n\
                    \n\
                    {\"ip\":\"1.2.3\"}\n\
                    {\"ip\":\"::1\",\"timestamp\":\"2020-06-24T15:27:00Z\"}\n\
                    \x20\t\r\n\
                    not json\n\
                    {\"url\":\"/\"}\n\
                    {\"ip\":\"1.2.3.4\",\"timestamp\":\"yesterday\"}\n\
                    [1]\n\
                    {\"ip\":\"1.2.3.4\"}";
        let batch = parse(NDJSON, body);
        assert_eq!(ips(&batch), [ip("1.2.3.4"), ip("::1"), ip("1.2.3.4")]);
        let r = &batch.report;
        assert_eq!((r.accepted, r.rejected), (3, 5));
        let listed: Vec<(u64, &str)> = r.errors.iter().map(|e| (e.line, e.error)).collect();
        assert_eq!(
            listed,
            [
                (3, "invalid_ip"),
                (6, "invalid_json"),
                (7, "missing_ip"),
                (8, "invalid_timestamp"),
                (9, "invalid_json"),
            ]
        );
        assert_eq!(
            r.errors[0].message,
            "\"1.2.3\" is not a valid IPv4 or IPv6 address"
        );
        assert_eq!(
            r.rejected_by_reason,
            [
                ("invalid_ip", 1),
                ("invalid_json", 2),
                ("missing_ip", 1),
                ("invalid_timestamp", 1)
            ]
        );
    }

    #[test]
    fn text_lines_in_every_access_log_shape() {
        let body = "83.150.59.250 - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/1.1\" 200 612 \"-\" \"curl/8\"\r\n\
                    10.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /a.gif HTTP/1.0\" 200 2326\n\
                    \n\
                    2001:db8::1 - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/2.0\" 200 1 \"-\" \"-\"\n\
                    - - - [24/Jun/2020:15:27:00 +0000] \"-\" 400 0 \"-\" \"-\"\n\
                    192.0.2.1";
        let batch = parse(TEXT, body);
        assert_eq!(
            ips(&batch),
            [
                ip("83.150.59.250"),
                ip("10.0.0.1"),
                ip("2001:db8::1"),
                ip("192.0.2.1")
            ]
        );
        assert_eq!(batch.report.rejected, 1);
        assert_eq!(batch.report.errors[0].line, 5);
        assert_eq!(batch.report.errors[0].error, "invalid_ip");
    }

    #[test]
    fn a_json_array_is_read_element_by_element() {
        let body = r#" [ {"ip":"1.2.3.4"}, {"ip":"bad"}, "1.2.3.5", {"ip":"::1","n":[1,{"a":2}]}, null ] "#;
        let batch = parse(BatchFormat::JsonArray, body);
        assert_eq!(ips(&batch), [ip("1.2.3.4"), ip("::1")]);
        let listed: Vec<(u64, &str)> = batch
            .report
            .errors
            .iter()
            .map(|e| (e.line, e.error))
            .collect();
        assert_eq!(
            listed,
            [(2, "invalid_ip"), (3, "invalid_json"), (5, "invalid_json")]
        );
        assert_eq!(
            parse(BatchFormat::JsonArray, "[]").report,
            Report::default()
        );
    }

    #[test]
    fn an_unreadable_array_is_a_body_error() {
        for body in [
            "[",
            r#"[{"ip":"1.2.3.4"},"#,
            r#"[{"ip":"1.2.3.4"}] x"#,
            "[1 2]",
            "{}",
        ] {
            let err = parse_batch(BatchFormat::JsonArray, body.as_bytes()).unwrap_err();
            assert!(matches!(err, BodyError::Unreadable(_)), "{body}: {err:?}");
        }
    }

    #[test]
    fn at_most_100_errors_are_listed_but_all_are_counted() {
        let body = "x\n".repeat(250) + "1.2.3.4\n";
        let batch = parse(TEXT, &body);
        let r = &batch.report;
        assert_eq!((r.accepted, r.rejected), (1, 250));
        assert_eq!(r.errors.len(), MAX_LISTED_ERRORS);
        assert_eq!(r.errors.last().unwrap().line, 100);
        assert_eq!(r.rejected_by_reason, [("invalid_ip", 250)]);
    }

    #[test]
    fn a_large_body_counted_in_two_halves_is_numbered_as_one() {
        let mut body = String::new();
        let mut want_errors = Vec::new();
        for i in 1..=40_000u64 {
            if i % 97 == 0 {
                body.push_str("{\"ip\":\"bad\"}\n");
                want_errors.push(i);
            } else if i % 89 == 0 {
                body.push_str("\r\n");
            } else {
                body.push_str(&format!(
                    "{{\"ip\":\"10.0.{}.{}\"}}\n",
                    i / 256 % 256,
                    i % 256
                ));
            }
        }
        assert!(body.len() > 2 * PARALLEL_MIN_BYTES);
        let store = Counter::in_memory();
        let insert = |batch: &[Observation]| Ok::<_, BodyError>(store.record(batch).unwrap());
        let counted = count_batch(NDJSON, body.as_bytes(), insert).unwrap();
        let serial = parse(NDJSON, &body);
        assert_eq!(counted.report, serial.report);
        let distinct: std::collections::HashSet<_> = ips(&serial).into_iter().collect();
        assert_eq!(counted.new_ips, distinct.len() as u64);
        assert_eq!(store.counts().total(), distinct.len() as u64);
        let lines: Vec<u64> = counted.report.errors.iter().map(|e| e.line).collect();
        assert_eq!(
            lines,
            want_errors[..MAX_LISTED_ERRORS.min(want_errors.len())]
        );
        assert_eq!(counted.report.rejected, want_errors.len() as u64);
    }

    /// A body parsed in two halves is still counted by one call, so that a refused insert (a
    /// full disk) leaves none of it counted: all or nothing.
    #[test]
    fn a_large_body_is_counted_whole_or_not_at_all() {
        let body: String = (0..60_000u32)
            .map(|i| format!("10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        assert!(body.len() > 2 * PARALLEL_MIN_BYTES);
        let store = Counter::in_memory();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let refused = count_batch(TEXT, body.as_bytes(), |batch: &[Observation]| {
            // The first call fails as a full disk would; any later one would count.
            if calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                return Err(BodyError::Unreadable("disk full".into()));
            }
            Ok(store.record(batch).unwrap())
        });
        assert!(refused.is_err());
        assert_eq!(
            store.counts().total(),
            0,
            "part of a refused batch was counted"
        );

        let mut seen = 0;
        let counted = count_batch(TEXT, body.as_bytes(), |batch: &[Observation]| {
            seen += 1;
            Ok::<_, BodyError>(store.record(batch).unwrap())
        })
        .unwrap();
        assert_eq!((seen, counted.new_ips), (1, 60_000));
    }

    #[test]
    fn merged_reports_add_up_and_keep_the_first_100_errors() {
        let mut a = parse(TEXT, &"x\n".repeat(60)).report;
        let b = parse(TEXT, &"y\n1.2.3.4\n".repeat(60)).report;
        a.merge(b, 60);
        assert_eq!((a.accepted, a.rejected), (60, 120));
        assert_eq!(a.rejected_by_reason, [("invalid_ip", 120)]);
        assert_eq!(a.errors.len(), MAX_LISTED_ERRORS);
        assert_eq!(a.errors[60].line, 61);
        assert_eq!(a.errors[61].line, 63);
    }

    #[test]
    fn blank_bodies_are_empty_batches() {
        for body in ["", "\n", "\r\n \n\t\n"] {
            assert_eq!(parse(NDJSON, body).report, Report::default(), "{body:?}");
            assert_eq!(parse(TEXT, body).report, Report::default(), "{body:?}");
        }
    }

    #[test]
    fn formats_are_detected_from_the_first_non_blank_line() {
        assert_eq!(
            LineFormat::detect(b"\n  {\"ip\":\"1.2.3.4\"}\n"),
            LineFormat::Ndjson
        );
        assert_eq!(
            LineFormat::detect(b"\r\n1.2.3.4 - - [x]\n{"),
            LineFormat::Text
        );
        assert_eq!(LineFormat::detect(b""), LineFormat::Text);
    }

    #[test]
    fn gzip_round_trips_including_several_members() {
        let body = b"{\"ip\":\"1.2.3.4\"}\n".repeat(1000);
        assert_eq!(gunzip_limited(&gzip(&body), 1 << 20).unwrap(), body);
        let mut two = gzip(b"1.2.3.4\n");
        two.extend(gzip(b"5.6.7.8\n"));
        assert_eq!(gunzip_limited(&two, 100).unwrap(), b"1.2.3.4\n5.6.7.8\n");
        assert_eq!(gunzip_limited(&gzip(b""), 100).unwrap(), b"");
    }

    #[test]
    fn a_body_exactly_at_the_limit_is_accepted_one_byte_more_is_not() {
        let body = vec![b'\n'; 1000];
        assert_eq!(gunzip_limited(&gzip(&body), 1000).unwrap().len(), 1000);
        assert_eq!(
            gunzip_limited(&gzip(&body), 999),
            Err(BodyError::TooLarge { limit: 999 })
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 16 MiB of zeros compress over 200:1. Cutting the end off the stream makes it broken
        // gzip: only a decoder that stops at the limit answers TooLarge rather than Unreadable.
        let mut bomb = gzip(&vec![0u8; 16 << 20]);
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        let whole = bomb.len() - 16;
        bomb.truncate(whole);
        assert_eq!(
            gunzip_limited(&bomb, 64 << 10),
            Err(BodyError::TooLarge { limit: 64 << 10 })
        );
        assert!(matches!(
            gunzip_limited(&bomb, 32 << 20),
            Err(BodyError::Unreadable(_))
        ));
    }

    #[test]
    fn broken_gzip_is_unreadable() {
        let mut broken = gzip(&b"1.2.3.4\n".repeat(100));
        let cut = broken.len() / 2;
        broken.truncate(cut);
        for body in [&b"not gzip at all"[..], &broken, &[0x1f, 0x8b]] {
            let err = gunzip_limited(body, 1 << 20).unwrap_err();
            assert!(matches!(err, BodyError::Unreadable(_)), "{err:?}");
        }
    }

    proptest! {
        #[test]
        fn every_line_is_counted_once(
            kinds in prop::collection::vec(0..4u8, 0..60),
            crlf in any::<bool>(),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut body = String::new();
            let (mut good, mut bad) = (0u64, 0u64);
            for (i, kind) in kinds.iter().enumerate() {
                match kind {
                    0 => { body.push_str(&format!("{{\"ip\":\"10.0.0.{}\"}}", i % 256)); good += 1 }
                    1 => { body.push_str("{\"ip\":\"nope\"}"); bad += 1 }
                    2 => { body.push('{'); bad += 1 }
                    _ => body.push_str("  "),
                }
                body.push_str(eol);
            }
            let batch = parse(NDJSON, &body);
            prop_assert_eq!(batch.report.accepted, good);
            prop_assert_eq!(batch.report.rejected, bad);
            prop_assert_eq!(batch.observations.len() as u64, good);
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in any::<Vec<u8>>()) {
            for format in [NDJSON, TEXT, BatchFormat::JsonArray] {
                let _ = parse_batch(format, &body);
            }
            let _ = gunzip_limited(&body, 1024);
        }
    }
}
