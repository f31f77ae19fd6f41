//! Bytes → addresses and log entries.
//!
//! This module owns the SPEC's "Address rules" ([`parse_ip`]), one JSON log entry (the
//! single-object body of `POST /logs` and each line of an NDJSON batch: [`parse_entry`]) and one
//! access-log line ([`parse_access_line`]). Everything here is a pure function: no I/O, no shared
//! state, and no allocation on the common path (a valid entry whose strings carry no JSON
//! escapes). Splitting a body or a file into lines is [`crate::batch`]'s.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::counter::{Observation, event_time};

/// Longest part of a rejected value, in characters, that an error quotes back to the client.
const MAX_QUOTED_CHARS: usize = 64;

/// A log entry that passed validation is what the counter is given of it: its address and the
/// time it gives.
pub type Entry = Observation;

/// Why one log entry was refused. Each variant has a stable machine-readable [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not valid JSON, trailing data after the value, a top level that is not an object, or a
    /// key given twice. Carries serde_json's reason.
    #[error("not a valid JSON log entry: {0}")]
    InvalidJson(String),
    /// No `ip` field, or `"ip": null`.
    #[error("the log entry has no \"ip\" field (absent or null)")]
    MissingIp,
    /// `ip` is present but not a valid address. Carries the string's contents or, for a value
    /// that is not a string (`123`, `true`, `{}`), its JSON text; cut to 64 characters.
    #[error("{0:?} is not a valid IPv4 or IPv6 address")]
    InvalidIp(String),
    /// `timestamp` is present (not `null`) but not an RFC 3339 string. Carries the text like
    /// [`InvalidIp`](Self::InvalidIp) does.
    #[error("{0:?} is not an RFC 3339 timestamp")]
    InvalidTimestamp(String),
}

impl EntryError {
    /// The `error` code the API reports.
    pub fn code(&self) -> &'static str {
        match self {
            EntryError::InvalidJson(_) => "invalid_json",
            EntryError::MissingIp => "missing_ip",
            EntryError::InvalidIp(_) => "invalid_ip",
            EntryError::InvalidTimestamp(_) => "invalid_timestamp",
        }
    }
}

/// Parses an address as the SPEC's "Address rules" allow it.
///
/// Accepts an IPv4 dotted quad without leading zeros or any RFC 4291 IPv6 text form (any case,
/// with or without `::`, with an embedded dotted quad). An IPv4-mapped IPv6 address
/// (`::ffff:1.2.3.4`, `::ffff:102:304`) comes back as the IPv4 address. Everything else is
/// `None`: surrounding whitespace, ports, brackets, zone ids, CIDR suffixes, host names, and
/// octal, hex or shortened IPv4 forms.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Some(v4) = dotted_quad(text.as_bytes()) {
        return Some(IpAddr::V4(v4));
    }
    // std's parser implements exactly the IPv6 rules.
    text.parse::<Ipv6Addr>().ok().map(|v6| v6.to_canonical())
}

/// An IPv4 address as [`parse_ip`] accepts it, read straight from bytes: four decimal octets of
/// at most three digits, no leading zeros, each at most 255. That is exactly what std's
/// `Ipv4Addr` parser accepts (a property test holds the two to it); faster, and text lines skip
/// a UTF-8 check (docs/DESIGN.md, "Parsing").
fn dotted_quad(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut at = 0;
    for (i, octet) in octets.iter_mut().enumerate() {
        if i > 0 {
            if text.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let start = at;
        let mut value = 0u32;
        while at - start < 3 {
            match text.get(at) {
                Some(&digit @ b'0'..=b'9') => value = value * 10 + u32::from(digit - b'0'),
                _ => break,
            }
            at += 1;
        }
        let digits = at - start;
        if digits == 0 || (digits > 1 && text[start] == b'0') {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    (at == text.len()).then(|| Ipv4Addr::from(octets))
}

/// Parses the client address of one access-log line: its first whitespace-separated field.
///
/// That is the remote address of nginx's and Apache's `combined` and `common` formats
/// (`%h`/`$remote_addr`) and of any format that starts with it. The field must be an address
/// [`parse_ip`] accepts: a `-`, a host name (Apache with `HostnameLookups On`) or an
/// `address:port` is [`EntryError::InvalidIp`]. A line with no field at all is `InvalidIp("")`;
/// callers skip blank lines before they get here.
pub fn parse_access_line(line: &[u8]) -> Result<IpAddr, EntryError> {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let rest = &line[start..];
    let end = rest
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(rest.len());
    let field = &rest[..end];
    if let Some(v4) = dotted_quad(field) {
        return Ok(IpAddr::V4(v4));
    }
    std::str::from_utf8(field)
        .ok()
        .and_then(parse_ip)
        .ok_or_else(|| EntryError::InvalidIp(excerpt(&String::from_utf8_lossy(field))))
}

/// The time an access-log line carries, as the `combined` and `common` formats write it after
/// the address: `[10/Oct/2000:13:55:36 -0700]`, the first `[` of the line. `None` when there is
/// none or it does not read: the line then counts at its arrival.
pub fn access_line_time(line: &[u8]) -> Option<NonZeroU32> {
    let open = memchr::memchr(b'[', line)?;
    let field = line.get(open + 1..open + 28)?;
    if field[26] != b']' || field[2] != b'/' || field[6] != b'/' || field[11] != b':' {
        return None;
    }
    let number = |at: usize, len: usize| -> Option<i32> {
        let digits = field.get(at..at + len)?;
        digits.iter().try_fold(0i32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i32::from(d - b'0'))
        })
    };
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month = MONTHS.iter().position(|m| &field[3..6] == *m)? as u8 + 1;
    let date = time::Date::from_calendar_date(
        number(7, 4)?,
        time::Month::try_from(month).ok()?,
        u8::try_from(number(0, 2)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(number(12, 2)?).ok()?,
        u8::try_from(number(15, 2)?).ok()?,
        u8::try_from(number(18, 2)?).ok()?,
    )
    .ok()?;
    let sign = match field[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if field[20] != b' ' || field[14] != b':' || field[17] != b':' {
        return None;
    }
    let offset = sign * (number(22, 2)? * 3600 + number(24, 2)? * 60);
    let local = time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp();
    event_time(local - i64::from(offset))
}

/// The fields of a log entry this service reads, as their raw JSON text (`null` counts as
/// absent), so that a value of the wrong type is reported as an invalid field, not as invalid
/// JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(expecting = "a JSON object")]
struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "raw_text")]
    ip: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "raw_text")]
    timestamp: Option<&'a str>,
}

fn raw_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de str>, D::Error> {
    Option::<&'de RawValue>::deserialize(d).map(|raw| raw.map(RawValue::get))
}

/// Parses one JSON log entry (the seed format
/// `{"timestamp":"2020-06-24T15:27:00.123456Z","ip":"83.150.59.250","url":"/path"}`).
///
/// `ip` is required and must be a string [`parse_ip`] accepts. `timestamp` is optional (`null`
/// counts as absent); when present it must be an RFC 3339 string. Other fields, `url` included,
/// are ignored. Checks run in that order: the first failure is the one reported.
///
/// Entries of the usual shape are read by `scan_flat_entry` in one pass; anything else goes
/// through serde_json, which also words the error.
pub fn parse_entry(json: &[u8]) -> Result<Entry, EntryError> {
    let fields = match scan_flat_entry(json) {
        Some(fields) => fields,
        None => fields_by_serde(json)?,
    };

    let ip_json = fields.ip.ok_or(EntryError::MissingIp)?;
    let ip = match json_string(ip_json) {
        Some(text) => parse_ip(&text).ok_or_else(|| EntryError::InvalidIp(excerpt(&text)))?,
        None => return Err(EntryError::InvalidIp(excerpt(ip_json))),
    };

    let time = match fields.timestamp {
        None => None,
        Some(ts_json) => match json_string(ts_json) {
            Some(text) => match OffsetDateTime::parse(&text, &Rfc3339) {
                Ok(time) => event_time(time.unix_timestamp()),
                Err(_) => return Err(EntryError::InvalidTimestamp(excerpt(&text))),
            },
            None => return Err(EntryError::InvalidTimestamp(excerpt(ts_json))),
        },
    };
    Ok(Entry { ip, time })
}

/// The general reader: any valid JSON object, and the precise reason for anything else.
fn fields_by_serde(json: &[u8]) -> Result<Fields<'_>, EntryError> {
    // serde_json skips the strings of fields it ignores without checking their UTF-8.
    if let Err(e) = std::str::from_utf8(json) {
        return Err(EntryError::InvalidJson(format!(
            "invalid UTF-8 at byte {}",
            e.valid_up_to()
        )));
    }
    if first_non_space(json) != Some(b'{') {
        return Err(not_an_object(json));
    }
    serde_json::from_slice(json).map_err(|e| EntryError::InvalidJson(e.to_string()))
}

/// Reads an entry that is one flat JSON object, the shape ingress controllers send, in a single
/// pass without serde: keys and string values without escapes or control characters, and
/// numbers, `true`, `false` and `null` as values. It gives up (`None`) on anything else — a
/// nested value, an escape, `ip` or `timestamp` given twice, any syntax error — and
/// [`fields_by_serde`] decides. So it never accepts what serde_json refuses nor reads a field
/// differently (property tests hold it to that). It is the seed format's fast path
/// (docs/DESIGN.md, "Parsing").
fn scan_flat_entry<'a>(json: &'a [u8]) -> Option<Fields<'a>> {
    let text = std::str::from_utf8(json).ok()?;
    let mut scan = Scanner { text, at: 0 };
    let mut fields = Fields::default();
    scan.skip_space();
    scan.expect(b'{')?;
    scan.skip_space();
    if !scan.eat(b'}') {
        loop {
            let key = scan.string()?;
            scan.skip_space();
            scan.expect(b':')?;
            scan.skip_space();
            let value = scan.scalar()?;
            let slot = match key {
                "\"ip\"" => Some(&mut fields.ip),
                "\"timestamp\"" => Some(&mut fields.timestamp),
                _ => None,
            };
            if let Some(slot) = slot {
                if slot.is_some() {
                    return None;
                }
                *slot = Some(value);
            }
            scan.skip_space();
            if scan.eat(b'}') {
                break;
            }
            scan.expect(b',')?;
            scan.skip_space();
        }
    }
    scan.skip_space();
    if scan.at != json.len() {
        return None;
    }
    let present = |raw: Option<&'a str>| raw.filter(|&raw| raw != "null");
    Some(Fields {
        ip: present(fields.ip),
        timestamp: present(fields.timestamp),
    })
}

/// A cursor over valid UTF-8 for [`scan_flat_entry`]. Every method returns `None` where the
/// scanner gives up.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn skip_digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    /// A string without escapes or control characters, quotes included.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.at;
        self.expect(b'"')?;
        let rest = &self.text.as_bytes()[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at += len + 1;
        Some(&self.text[start..self.at])
    }

    /// A string, a number, `true`, `false` or `null`, as its JSON text.
    fn scalar(&mut self) -> Option<&'a str> {
        let start = self.at;
        match self.peek()? {
            b'"' => return self.string(),
            b't' | b'f' | b'n' => {
                let rest = &self.text[start..];
                let word = ["true", "false", "null"]
                    .into_iter()
                    .find(|word| rest.starts_with(word))?;
                self.at += word.len();
            }
            _ => self.number()?,
        }
        Some(&self.text[start..self.at])
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.skip_digits();
            }
            _ => return None,
        }
        if self.eat(b'.') && self.skip_digits() == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.skip_digits() == 0 {
                return None;
            }
        }
        Some(())
    }
}

/// The first byte that is not JSON whitespace.
fn first_non_space(json: &[u8]) -> Option<u8> {
    json.iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// The error for a body whose top level is not an object: serde_json's syntax error if it is not
/// JSON at all, otherwise what kind of value it is. Needed because serde would happily read a
/// struct from an array.
fn not_an_object(json: &[u8]) -> EntryError {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(json) {
        return EntryError::InvalidJson(e.to_string());
    }
    let found = match first_non_space(json) {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    EntryError::InvalidJson(format!("expected a JSON object, found {found}"))
}

/// The contents of a JSON string value, or `None` when the value is not a string. Borrows unless
/// the string contains escapes.
fn json_string(text: &str) -> Option<Cow<'_, str>> {
    // The value is valid JSON, so a leading quote means a whole string.
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    // Fails only for escapes that are not Unicode text (a lone surrogate such as "\ud800").
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// `text` cut to [`MAX_QUOTED_CHARS`] characters, with `…` marking a cut.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    fn v6(groups: [u16; 8]) -> Option<IpAddr> {
        Some(IpAddr::V6(Ipv6Addr::from(groups)))
    }

    #[test]
    fn address_forms() {
        let table: &[(&str, Option<IpAddr>)] = &[
            // IPv4 dotted quad.
            ("83.150.59.250", v4(83, 150, 59, 250)),
            ("0.0.0.0", v4(0, 0, 0, 0)),
            ("255.255.255.255", v4(255, 255, 255, 255)),
            ("10.0.0.1", v4(10, 0, 0, 1)),
            ("1.2.3.4", v4(1, 2, 3, 4)),
            // IPv6: every spelling of one address is that address.
            ("2001:db8::1", v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])),
            (
                "2001:0DB8:0:0:0:0:0:1",
                v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
            ),
            (
                "2001:0db8:0000:0000:0000:0000:0000:0001",
                v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
            ),
            ("2001:DB8::0:1", v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])),
            ("::", v6([0; 8])),
            ("0:0:0:0:0:0:0:0", v6([0; 8])),
            ("::1", v6([0, 0, 0, 0, 0, 0, 0, 1])),
            ("1::", v6([1, 0, 0, 0, 0, 0, 0, 0])),
            ("FE80::1", v6([0xfe80, 0, 0, 0, 0, 0, 0, 1])),
            ("1:2:3:4:5:6:7:8", v6([1, 2, 3, 4, 5, 6, 7, 8])),
            ("::2:3:4:5:6:7:8", v6([0, 2, 3, 4, 5, 6, 7, 8])),
            ("1:2:3:4:5:6:7::", v6([1, 2, 3, 4, 5, 6, 7, 0])),
            ("1:2:3::8", v6([1, 2, 3, 0, 0, 0, 0, 8])),
            ("1:2:3:4:5:6::8", v6([1, 2, 3, 4, 5, 6, 0, 8])),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", v6([0xffff; 8])),
            // Embedded dotted quad: only the IPv4-mapped prefix ::ffff:0:0/96 becomes IPv4.
            ("::ffff:1.2.3.4", v4(1, 2, 3, 4)),
            ("::FFFF:1.2.3.4", v4(1, 2, 3, 4)),
            ("::ffff:102:304", v4(1, 2, 3, 4)),
            ("0:0:0:0:0:ffff:0102:0304", v4(1, 2, 3, 4)),
            (
                "0000:0000:0000:0000:0000:FFFF:5396:3BFA",
                v4(83, 150, 59, 250),
            ),
            ("::1.2.3.4", v6([0, 0, 0, 0, 0, 0, 0x102, 0x304])),
            (
                "64:ff9b::1.2.3.4",
                v6([0x64, 0xff9b, 0, 0, 0, 0, 0x102, 0x304]),
            ),
            (
                "::ffff:0:1.2.3.4",
                v6([0, 0, 0, 0, 0xffff, 0, 0x102, 0x304]),
            ),
            ("1:2:3:4:5:6:1.2.3.4", v6([1, 2, 3, 4, 5, 6, 0x102, 0x304])),
            // Empty and whitespace.
            ("", None),
            (" ", None),
            (" 1.2.3.4", None),
            ("1.2.3.4 ", None),
            ("\t1.2.3.4", None),
            ("1.2.3.4\n", None),
            ("\u{a0}1.2.3.4", None),
            (" ::1", None),
            ("::1 ", None),
            ("1.2.3.4\0", None),
            // Ports and brackets.
            ("1.2.3.4:80", None),
            ("[::1]:80", None),
            ("[::1]", None),
            ("[2001:db8::1]", None),
            // Zone ids.
            ("fe80::1%eth0", None),
            ("fe80::1%1", None),
            ("fe80::1%", None),
            // CIDR suffixes.
            ("10.0.0.0/8", None),
            ("1.2.3.4/32", None),
            ("2001:db8::/32", None),
            // Host names and other text.
            ("localhost", None),
            ("example.com", None),
            ("null", None),
            ("1.2.3.4.example.com", None),
            // Shortened, octal, hex, integer and leading-zero IPv4 forms.
            ("1.2.3", None),
            ("1.2", None),
            ("1", None),
            ("2130706433", None),
            ("01.2.3.4", None),
            ("1.2.3.04", None),
            ("010.0.0.1", None),
            ("00.0.0.0", None),
            ("0x7f.0.0.1", None),
            ("0x7f000001", None),
            ("0177.0.0.1", None),
            // Malformed IPv4.
            ("256.1.1.1", None),
            ("1.2.3.256", None),
            ("1.2.3.4.5", None),
            ("1.2.3.4.", None),
            (".1.2.3.4", None),
            ("1..2.3", None),
            ("1.2.3.-1", None),
            ("+1.2.3.4", None),
            ("１.2.3.4", None),
            // Malformed IPv6.
            (":", None),
            (":::", None),
            ("1::2::3", None),
            ("1:2:3:4:5:6:7:8:9", None),
            ("1:2:3:4:5:6:7", None),
            ("1:2:3:4:5:6:7:8::", None),
            (":1:2:3:4:5:6:7", None),
            ("1:2:3:4:5:6:7:", None),
            ("12345::1", None),
            ("00001::1", None),
            ("g::1", None),
            ("::ffff:01.2.3.4", None),
            ("::ffff:256.1.1.1", None),
            ("::ffff:1.2.3", None),
            ("::1.2.3.4:5", None),
            ("1:2:3:4:5:6:7:1.2.3.4", None),
        ];
        let wrong: Vec<String> = table
            .iter()
            .filter(|(text, want)| parse_ip(text) != *want)
            .map(|(text, want)| format!("{text:?}: got {:?}, want {want:?}", parse_ip(text)))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// Eight IPv6 groups with zero groups common, so that `::` runs occur.
    fn groups() -> impl Strategy<Value = [u16; 8]> {
        prop::array::uniform8(prop_oneof![Just(0u16), Just(0xffff), any::<u16>()])
    }

    /// What the address rules say `groups` is, computed without the parser under test.
    fn expected(groups: [u16; 8]) -> IpAddr {
        match groups {
            [0, 0, 0, 0, 0, 0xffff, hi, lo] => {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            _ => IpAddr::V6(Ipv6Addr::from(groups)),
        }
    }

    fn join(groups: &[u16], render: impl Fn(u16) -> String) -> String {
        groups
            .iter()
            .map(|&g| render(g))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Every RFC 4291 text form of `groups` this test knows how to write.
    fn spellings(groups: [u16; 8]) -> Vec<String> {
        let mut forms = vec![
            join(&groups, |g| format!("{g:04x}")),
            join(&groups, |g| format!("{g:04X}")),
            join(&groups, |g| format!("{g:x}")),
            join(&groups, |g| format!("{g:X}")),
            Ipv6Addr::from(groups).to_string(),
        ];
        // `::` in place of every run of one or more zero groups, not only the longest.
        for start in 0..8 {
            for end in start + 1..=8 {
                if groups[start..end].iter().all(|&g| g == 0) {
                    let head = join(&groups[..start], |g| format!("{g:x}"));
                    let tail = join(&groups[end..], |g| format!("{g:X}"));
                    forms.push(format!("{head}::{tail}"));
                }
            }
        }
        // The last 32 bits as a dotted quad.
        let [a, b] = groups[6].to_be_bytes();
        let [c, d] = groups[7].to_be_bytes();
        forms.push(format!(
            "{}:{a}.{b}.{c}.{d}",
            join(&groups[..6], |g| format!("{g:x}"))
        ));
        forms
    }

    proptest! {
        #[test]
        fn every_spelling_of_an_ipv6_address_is_one_address(groups in groups()) {
            let want = expected(groups);
            for form in spellings(groups) {
                prop_assert_eq!(parse_ip(&form), Some(want), "{}", form);
            }
        }

        #[test]
        fn random_u128_spellings_agree(bits in any::<u128>()) {
            let groups = Ipv6Addr::from(bits).segments();
            let want = expected(groups);
            for form in spellings(groups) {
                prop_assert_eq!(parse_ip(&form), Some(want), "{}", form);
            }
        }

        #[test]
        fn the_dotted_quad_reader_agrees_with_std(text in "[0-9.]{0,17}|[0-9]{1,4}(\\.[0-9]{1,4}){3}|.{0,16}") {
            prop_assert_eq!(dotted_quad(text.as_bytes()), text.parse::<Ipv4Addr>().ok(), "{}", text);
        }

        #[test]
        fn agrees_with_std_on_ipv4(ip in any::<Ipv4Addr>()) {
            prop_assert_eq!(parse_ip(&ip.to_string()), Some(IpAddr::V4(ip)));
            prop_assert_eq!(dotted_quad(ip.to_string().as_bytes()), Some(ip));
        }

        #[test]
        fn agrees_with_std_on_ipv6(ip in any::<Ipv6Addr>()) {
            let want = match ip.to_ipv4_mapped() {
                Some(mapped) => IpAddr::V4(mapped),
                None => IpAddr::V6(ip),
            };
            prop_assert_eq!(parse_ip(&ip.to_string()), Some(want));
        }

        #[test]
        fn decorated_addresses_are_rejected(
            ip in prop_oneof![
                any::<Ipv4Addr>().prop_map(IpAddr::V4),
                any::<Ipv6Addr>().prop_map(IpAddr::V6),
            ],
            decoration in prop_oneof![
                Just(" {}"), Just("{} "), Just("{}\n"), Just("{}:80"), Just("[{}]"),
                Just("[{}]:443"), Just("{}/24"), Just("{}%eth0"), Just("{}."), Just("x{}"),
            ],
        ) {
            let text = decoration.replace("{}", &ip.to_string());
            prop_assert_eq!(parse_ip(&text), None, "{}", text);
        }

        #[test]
        fn leading_zero_in_an_ipv4_octet_is_rejected(ip in any::<Ipv4Addr>(), which in 0..4usize) {
            let mut octets: Vec<String> = ip.octets().iter().map(u8::to_string).collect();
            octets[which].insert(0, '0');
            let text = octets.join(".");
            prop_assert_eq!(parse_ip(&text), None, "{}", text);
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse_ip(&text);
        }

        #[test]
        fn address_like_text_never_panics(text in "[0-9a-fA-F:.%/\\[\\] ]{0,48}") {
            if let Some(ip) = parse_ip(&text) {
                // Whatever is accepted must survive a round trip through its canonical form.
                prop_assert_eq!(parse_ip(&ip.to_string()), Some(ip));
            }
        }

        #[test]
        fn the_first_field_of_an_access_line_is_its_address(
            ip in prop_oneof![
                any::<Ipv4Addr>().prop_map(IpAddr::V4),
                any::<Ipv6Addr>().prop_map(IpAddr::V6),
            ],
            sep in "[ \t]",
            rest in any::<Vec<u8>>(),
        ) {
            let mut line = format!("{ip}{sep}").into_bytes();
            line.extend_from_slice(&rest);
            prop_assert_eq!(parse_access_line(&line), Ok(parse_ip(&ip.to_string()).unwrap()));
        }

        #[test]
        fn arbitrary_access_lines_never_panic(line in any::<Vec<u8>>()) {
            let _ = parse_access_line(&line);
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in any::<Vec<u8>>()) {
            let _ = parse_entry(&body);
        }

        #[test]
        fn the_scanner_reads_flat_entries(
            members in prop::collection::vec((flat_key(), flat_value()), 0..6),
            space in prop::collection::vec(prop::sample::select(vec!["", " ", "\t", "\r\n "]), 32),
        ) {
            let json = object(&members, &space);
            let repeats = ["\"ip\"", "\"timestamp\""]
                .iter()
                .any(|key| members.iter().filter(|(k, _)| k == key).count() > 1);
            prop_assert_eq!(scan_flat_entry(json.as_bytes()).is_some(), !repeats, "{}", json);
        }

        #[test]
        fn the_scanner_never_disagrees_with_serde(
            members in prop::collection::vec((any_key(), any_value()), 0..6),
            space in prop::collection::vec(prop::sample::select(vec!["", " ", "\n"]), 32),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..2),
        ) {
            let mut json = object(&members, &space).into_bytes();
            for (at, byte, how) in edits {
                let at = at.index(json.len() + 1);
                match how {
                    0 => json.insert(at, byte),
                    1 if at < json.len() => { json.remove(at); }
                    _ if at < json.len() => json[at] = byte,
                    _ => {}
                }
            }
            if let Some(fields) = scan_flat_entry(&json) {
                prop_assert_eq!(Ok(fields), fields_by_serde(&json), "{}", String::from_utf8_lossy(&json));
            }
        }
    }

    fn flat_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\"ip\"".to_owned()),
            Just("\"timestamp\"".to_owned()),
            "[a-z_é]{0,8}".prop_map(|k| format!("\"{k}\"")),
        ]
    }

    fn flat_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -!#-\\[\\]-~é中]{0,20}".prop_map(|s| format!("\"{s}\"")),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| serde_json::to_string(&n).unwrap()),
            prop::sample::select(vec!["0", "-0", "1e5", "1.5E-3", "2e+10", "-0.0e0"])
                .prop_map(str::to_owned),
            prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_owned),
        ]
    }

    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => flat_key(),
            1 => any::<String>().prop_map(|k| serde_json::to_string(&k).unwrap()),
        ]
    }

    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => flat_value(),
            1 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            1 => Just("[1,{\"ip\":\"1.2.3.4\"}]".to_owned()),
            1 => Just("{}".to_owned()),
            // Numbers and near-numbers: leading zeros, a bare `.` or exponent, signs.
            4 => "[-+]?[0-9]{1,3}(\\.[0-9]{0,2})?([eE][-+]?[0-9]{0,2})?",
            1 => prop::sample::select(vec!["tru", "nul", "truex", "NaN", "-", "\"\\u0041\""])
                .prop_map(str::to_owned),
        ]
    }

    /// `{k: v, ...}` with `space[i]` around the tokens.
    fn object(members: &[(String, String)], space: &[&str]) -> String {
        let mut space = space.iter().cycle();
        let mut json = format!("{}{{", space.next().unwrap());
        for (i, (key, value)) in members.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let [a, b, c, d] = std::array::from_fn(|_| space.next().unwrap());
            json.push_str(&format!("{a}{key}{b}:{c}{value}{d}"));
        }
        json.push_str(&format!("}}{}", space.next().unwrap()));
        json
    }

    #[test]
    fn entry_forms() {
        use EntryError::*;
        let ok = |a, b, c, d| Ok(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
        let json = |s: &str| Err(InvalidJson(s.to_owned()));
        let table: &[(&str, Result<IpAddr, EntryError>)] = &[
            // Valid.
            (
                r#"{"timestamp":"2020-06-24T15:27:00.123456Z","ip":"83.150.59.250","url":"/path"}"#,
                ok(83, 150, 59, 250),
            ),
            (r#"{"ip":"1.2.3.4"}"#, ok(1, 2, 3, 4)),
            (r#"{"ip":"1.2.3.4","timestamp":null}"#, ok(1, 2, 3, 4)),
            (
                r#"{"ip":"1.2.3.4","timestamp":"2020-06-24T15:27:00+02:00"}"#,
                ok(1, 2, 3, 4),
            ),
            (
                r#"{"ip":"1.2.3.4","url":null,"user_agent":"x","n":[1,{"a":2}]}"#,
                ok(1, 2, 3, 4),
            ),
            (r#"{"ip":"::ffff:1.2.3.4"}"#, ok(1, 2, 3, 4)),
            (
                r#"{"ip":"2001:0DB8:0:0:0:0:0:1"}"#,
                Ok("2001:db8::1".parse().unwrap()),
            ),
            (" \r\n\t{ \"ip\" : \"1.2.3.4\" } \n", ok(1, 2, 3, 4)),
            // JSON escapes in strings and keys.
            (r#"{"ip":"1.2.3.\u0034"}"#, ok(1, 2, 3, 4)),
            (r#"{"\u0069p":"1.2.3.4"}"#, ok(1, 2, 3, 4)),
            (
                r#"{"ip":"1.2.3.4","timestamp":"2020-06-24T15:27:00\u005a"}"#,
                ok(1, 2, 3, 4),
            ),
            // Missing ip.
            (r#"{}"#, Err(MissingIp)),
            (r#"{"ip":null}"#, Err(MissingIp)),
            (r#"{"IP":"1.2.3.4"}"#, Err(MissingIp)),
            (
                r#"{"timestamp":"2020-06-24T15:27:00Z","url":"/"}"#,
                Err(MissingIp),
            ),
            // Invalid ip: bad text, or not a string at all.
            (r#"{"ip":"1.2.3"}"#, Err(InvalidIp("1.2.3".into()))),
            (r#"{"ip":""}"#, Err(InvalidIp("".into()))),
            (r#"{"ip":" 1.2.3.4"}"#, Err(InvalidIp(" 1.2.3.4".into()))),
            (
                r#"{"ip":"1.2.3.4:80"}"#,
                Err(InvalidIp("1.2.3.4:80".into())),
            ),
            (
                r#"{"ip":"1.2.3.\u0035\u0035\u0035"}"#,
                Err(InvalidIp("1.2.3.555".into())),
            ),
            (r#"{"ip":"a\nb"}"#, Err(InvalidIp("a\nb".into()))),
            (r#"{"ip":"\ud800"}"#, Err(InvalidIp(r#""\ud800""#.into()))),
            (r#"{"ip":123}"#, Err(InvalidIp("123".into()))),
            (r#"{"ip":16909060}"#, Err(InvalidIp("16909060".into()))),
            (r#"{"ip":true}"#, Err(InvalidIp("true".into()))),
            (
                r#"{"ip": ["1.2.3.4"] }"#,
                Err(InvalidIp(r#"["1.2.3.4"]"#.into())),
            ),
            (
                r#"{"ip":{"v4":"1.2.3.4"}}"#,
                Err(InvalidIp(r#"{"v4":"1.2.3.4"}"#.into())),
            ),
            // Invalid ip is reported before an invalid timestamp.
            (r#"{"ip":"x","timestamp":"y"}"#, Err(InvalidIp("x".into()))),
            // Invalid timestamp.
            (
                r#"{"ip":"1.2.3.4","timestamp":"yesterday"}"#,
                Err(InvalidTimestamp("yesterday".into())),
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":""}"#,
                Err(InvalidTimestamp("".into())),
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":"2020-06-24 15:27:00"}"#,
                Err(InvalidTimestamp("2020-06-24 15:27:00".into())),
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":"2020-06-24T15:27:00"}"#,
                Err(InvalidTimestamp("2020-06-24T15:27:00".into())),
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":"2020-13-24T15:27:00Z"}"#,
                Err(InvalidTimestamp("2020-13-24T15:27:00Z".into())),
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":1593012420}"#,
                Err(InvalidTimestamp("1593012420".into())),
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":{}}"#,
                Err(InvalidTimestamp("{}".into())),
            ),
            // Not JSON, or not one object.
            ("", json("EOF while parsing a value")),
            ("   ", json("EOF while parsing a value")),
            ("not json", json("expected ident")),
            (r#"{"ip":"1.2.3.4""#, json("EOF while parsing an object")),
            (r#"{"ip":"1.2.3.4",}"#, json("trailing comma")),
            (r#"{"ip":1.2.3.4}"#, json("expected `,` or `}`")),
            (r#"{ip:"1.2.3.4"}"#, json("key must be a string")),
            (r#"{"ip":"1.2.3.4"}x"#, json("trailing characters")),
            (
                r#"{"ip":"1.2.3.4"}{"ip":"5.6.7.8"}"#,
                json("trailing characters"),
            ),
            (r#"{"ip":"1.2.3.4"}]"#, json("trailing characters")),
            (
                r#"{"ip":"1.2.3.4","url":"/a"b}"#,
                json("expected `,` or `}`"),
            ),
            (
                "{\"ip\":\"1.2.3.4\u{1}\"}",
                json("control character (\\u0000-\\u001F) found while parsing a string"),
            ),
            (
                r#"["1.2.3.4"]"#,
                json("expected a JSON object, found an array"),
            ),
            (
                r#"[{"ip":"1.2.3.4"}]"#,
                json("expected a JSON object, found an array"),
            ),
            (
                r#""1.2.3.4""#,
                json("expected a JSON object, found a string"),
            ),
            ("16909060", json("expected a JSON object, found a number")),
            ("null", json("expected a JSON object, found null")),
            ("true", json("expected a JSON object, found a boolean")),
            ("[1,", json("EOF while parsing a value")),
            // A key given twice is ambiguous: refused rather than first- or last-wins.
            (
                r#"{"ip":"1.2.3.4","ip":"5.6.7.8"}"#,
                json("duplicate field `ip`"),
            ),
            (
                r#"{"ip":null,"ip":"5.6.7.8"}"#,
                json("duplicate field `ip`"),
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":null,"timestamp":null}"#,
                json("duplicate field `timestamp`"),
            ),
        ];
        // serde_json's reasons are matched by prefix: the position it appends may shift
        // between versions.
        let matches =
            |got: &Result<IpAddr, EntryError>, want: &Result<IpAddr, EntryError>| match (got, want)
            {
                (Err(InvalidJson(got)), Err(InvalidJson(want))) => got.starts_with(want.as_str()),
                _ => got == want,
            };
        let ip = |body: &str| parse_entry(body.as_bytes()).map(|e| e.ip);
        let wrong: Vec<String> = table
            .iter()
            .filter(|(body, want)| !matches(&ip(body), want))
            .map(|(body, want)| format!("{body}\n    got  {:?}\n    want {want:?}", ip(body)))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// The entry's time is carried to the counter: seconds since the Unix epoch, whatever the
    /// offset it is written with; none without one.
    #[test]
    fn entries_carry_their_time() {
        let time = |body: &str| parse_entry(body.as_bytes()).unwrap().time.map(|t| t.get());
        assert_eq!(
            time(r#"{"ip":"1.2.3.4","timestamp":"2024-01-01T00:00:00Z"}"#),
            Some(1_704_067_200)
        );
        assert_eq!(
            time(r#"{"ip":"1.2.3.4","timestamp":"2024-01-01T02:00:00.999+02:00"}"#),
            Some(1_704_067_200)
        );
        assert_eq!(
            time(r#"{"timestamp":"1969-12-31T23:59:59Z","ip":"::1"}"#),
            Some(1)
        );
        assert_eq!(time(r#"{"ip":"1.2.3.4","timestamp":null}"#), None);
        assert_eq!(time(r#"{"ip":"1.2.3.4"}"#), None);
        // The general reader gives the same.
        assert_eq!(
            time(r#"{"ip":"1.2.3.\u0034","timestamp":"2024-01-01T00:00:00Z"}"#),
            Some(1_704_067_200)
        );
    }

    #[test]
    fn access_log_lines_carry_their_time() {
        let time = |line: &str| access_line_time(line.as_bytes()).map(|t| t.get());
        assert_eq!(
            time(
                r#"10.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#
            ),
            Some(971_211_336)
        );
        assert_eq!(
            time(r#"83.150.59.250 - - [01/Jan/2024:00:00:00 +0000] "GET /a HTTP/1.1" 200 612"#),
            Some(1_704_067_200)
        );
        assert_eq!(
            time("2001:db8::1 - - [01/Jan/2024:01:30:00 +0130] \"GET /\" 200 1"),
            Some(1_704_067_200)
        );
        for no_time in [
            "192.0.2.7",
            "192.0.2.7 - - [x] \"GET /\" 200 1",
            "192.0.2.7 - - [31/Feb/2024:00:00:00 +0000]",
            "192.0.2.7 - - [01/Foo/2024:00:00:00 +0000]",
            "192.0.2.7 - - [01/Jan/2024:25:00:00 +0000]",
            "192.0.2.7 - - [01/Jan/2024:00:00:00 *0000]",
            "192.0.2.7 - - [01/Jan/2024:00:00:00 +0000",
        ] {
            assert_eq!(time(no_time), None, "{no_time}");
        }
    }

    #[test]
    fn access_log_lines() {
        let ip = |s: &str| Ok(s.parse::<IpAddr>().unwrap());
        let bad = |s: &str| Err(EntryError::InvalidIp(s.to_owned()));
        let table: &[(&[u8], Result<IpAddr, EntryError>)] = &[
            // nginx/Apache combined.
            (
                b"83.150.59.250 - - [24/Jun/2020:15:27:00 +0000] \"GET /a HTTP/1.1\" 200 612 \"-\" \"curl/8.0\"",
                ip("83.150.59.250"),
            ),
            // Apache common, with a user name.
            (
                b"10.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326",
                ip("10.0.0.1"),
            ),
            // IPv6 clients, any spelling; mapped IPv4 is IPv4.
            (
                b"2001:DB8::1 - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/2.0\" 200 1 \"-\" \"-\"",
                ip("2001:db8::1"),
            ),
            (b"::ffff:1.2.3.4 - - [x] \"GET /\" 200 1", ip("1.2.3.4")),
            // Address-first lines of any other shape; tabs and CRLF.
            (b"192.0.2.7", ip("192.0.2.7")),
            (b"192.0.2.7\r", ip("192.0.2.7")),
            (b"192.0.2.7\tGET\t/", ip("192.0.2.7")),
            (b"  192.0.2.8 rest", ip("192.0.2.8")),
            (b"192.0.2.9 \xff\xfe not utf-8 after the field", ip("192.0.2.9")),
            // No usable address.
            (b"- - - [24/Jun/2020:15:27:00 +0000] \"GET / HTTP/1.1\" 400 0", bad("-")),
            (b"example.com - - [x] \"GET /\" 200 1", bad("example.com")),
            (b"1.2.3.4:5678 - - [x]", bad("1.2.3.4:5678")),
            (b"[::1] - - [x]", bad("[::1]")),
            (b"01.2.3.4 x", bad("01.2.3.4")),
            (b"", bad("")),
            (b"\xff1.2.3.4 x", bad("\u{fffd}1.2.3.4")),
        ];
        let wrong: Vec<String> = table
            .iter()
            .filter(|(line, want)| parse_access_line(line) != *want)
            .map(|(line, want)| {
                format!(
                    "{:?}: got {:?}, want {want:?}",
                    String::from_utf8_lossy(line),
                    parse_access_line(line)
                )
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn invalid_utf8_is_invalid_json() {
        // In the address, in a field nobody reads, and in a key: each makes the entry invalid.
        for body in [
            &b"{\"ip\":\"1.2.3.4\xff\"}"[..],
            b"{\"ip\":\"1.2.3.4\",\"url\":\"/\xff\"}",
            b"{\"ip\":\"1.2.3.4\",\"\xc3\":1}",
            b"{\"ip\":\"1.2.3.4\",\"n\":[\"\xed\xa0\x80\"]}",
        ] {
            let err = parse_entry(body).unwrap_err();
            assert_eq!(
                err.code(),
                "invalid_json",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn long_rejected_values_are_cut_to_64_characters() {
        let long = "é".repeat(100);
        let body = format!(r#"{{"ip":"{long}"}}"#);
        let cut = format!("{}…", "é".repeat(64));
        assert_eq!(
            parse_entry(body.as_bytes()),
            Err(EntryError::InvalidIp(cut.clone()))
        );

        let body = format!(r#"{{"ip":"1.2.3.4","timestamp":"{long}"}}"#);
        assert_eq!(
            parse_entry(body.as_bytes()),
            Err(EntryError::InvalidTimestamp(cut))
        );

        let exactly = "x".repeat(64);
        let body = format!(r#"{{"ip":"{exactly}"}}"#);
        assert_eq!(
            parse_entry(body.as_bytes()),
            Err(EntryError::InvalidIp(exactly))
        );
    }

    #[test]
    fn codes_and_messages() {
        let cases = [
            (
                EntryError::InvalidJson("trailing characters".into()),
                "invalid_json",
                "not a valid JSON log entry: trailing characters",
            ),
            (
                EntryError::MissingIp,
                "missing_ip",
                "the log entry has no \"ip\" field (absent or null)",
            ),
            (
                EntryError::InvalidIp("1.2.3".into()),
                "invalid_ip",
                "\"1.2.3\" is not a valid IPv4 or IPv6 address",
            ),
            (
                EntryError::InvalidTimestamp("a\nb".into()),
                "invalid_timestamp",
                "\"a\\nb\" is not an RFC 3339 timestamp",
            ),
        ];
        for (err, code, message) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.to_string(), message);
        }
    }
}
