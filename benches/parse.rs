//! Throughput of the request hot path: address text → `IpAddr`, one JSON log entry → `Entry`,
//! and a batch body → addresses and a report.
//!
//! Each group runs the same fixed-seed inputs through our parser and through a std or serde_json
//! baseline, so the figures read as ratios: `parse_ip` against `str::parse::<IpAddr>`,
//! `parse_entry` against building a `serde_json::Value` from the same bodies, and `parse_batch`
//! (NDJSON and access-log text) against splitting lines and parsing each address with std.
//!
//! Run with `cargo bench --bench parse`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use ip_counter::batch::{BatchFormat, LineFormat, parse_batch};
use ip_counter::parse::{parse_entry, parse_ip};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inputs per iteration: enough to defeat branch prediction on a single input.
const N: usize = 1024;

fn ipv4_texts(rng: &mut StdRng) -> Vec<String> {
    (0..N)
        .map(|_| Ipv4Addr::from(rng.random::<u32>()).to_string())
        .collect()
}

/// Realistic IPv6: a /32 provider prefix, mostly-zero middle groups, a random interface id.
fn ipv6_texts(rng: &mut StdRng) -> Vec<String> {
    (0..N)
        .map(|_| {
            let bits = (0x2001_0db8u128 << 96) | u128::from(rng.random::<u64>());
            Ipv6Addr::from(bits).to_string()
        })
        .collect()
}

/// Seed-format bodies, as clients post them (about 97 bytes each).
fn bodies(rng: &mut StdRng) -> Vec<Vec<u8>> {
    (0..N)
        .map(|i| {
            let ip = IpAddr::from(rng.random::<[u8; 4]>());
            let micros = rng.random_range(0..1_000_000);
            let second = i % 60;
            format!(
                r#"{{"timestamp":"2020-06-24T15:27:{second:02}.{micros:06}Z","ip":"{ip}","url":"/api/v1/items/{i}?page=2"}}"#
            )
            .into_bytes()
        })
        .collect()
}

fn bench_parse_ip(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let inputs = [
        ("ipv4", ipv4_texts(&mut rng)),
        ("ipv6", ipv6_texts(&mut rng)),
    ];

    let mut group = c.benchmark_group("parse_ip");
    group.throughput(Throughput::Elements(N as u64));
    for (kind, texts) in &inputs {
        group.bench_function(format!("{kind}/parse_ip"), |b| {
            b.iter(|| {
                for text in texts {
                    black_box(parse_ip(black_box(text)));
                }
            })
        });
        group.bench_function(format!("{kind}/std"), |b| {
            b.iter(|| {
                for text in texts {
                    black_box(black_box(text).parse::<IpAddr>().ok());
                }
            })
        });
    }
    group.finish();
}

fn bench_parse_entry(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let bodies = bodies(&mut rng);

    let mut group = c.benchmark_group("parse_entry");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("seed_format/parse_entry", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(parse_entry(black_box(body)).ok());
            }
        })
    });
    group.bench_function("seed_format/serde_json_value", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(body)).ok());
            }
        })
    });
    group.finish();
}

/// The same addresses as one NDJSON body and one combined-format access-log body.
fn batch_bodies(rng: &mut StdRng) -> (Vec<u8>, Vec<u8>) {
    let ndjson = bodies(rng).join(&b'\n');
    let text: Vec<u8> = (0..N)
        .flat_map(|i| {
            let ip = IpAddr::from(rng.random::<[u8; 4]>());
            format!(
                "{ip} - - [24/Jun/2020:15:27:00 +0000] \"GET /api/v1/items/{i}?page=2 HTTP/1.1\" 200 612 \"-\" \"Mozilla/5.0\"\n"
            )
            .into_bytes()
        })
        .collect();
    (ndjson, text)
}

fn bench_parse_batch(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let (ndjson, text) = batch_bodies(&mut rng);

    let mut group = c.benchmark_group("parse_batch");
    group.throughput(Throughput::Elements(N as u64));
    for (kind, format, body) in [
        ("ndjson", LineFormat::Ndjson, &ndjson),
        ("text", LineFormat::Text, &text),
    ] {
        group.bench_function(format!("{kind}/parse_batch"), |b| {
            b.iter(|| black_box(parse_batch(BatchFormat::Lines(format), black_box(body)).ok()))
        });
    }
    // The least a batch parser could do: split, take the first field, parse it with std.
    group.bench_function("text/split_and_std_parse", |b| {
        b.iter(|| {
            for line in black_box(&text).split(|&c| c == b'\n') {
                let field = line.split(|&c| c == b' ').next().unwrap_or_default();
                black_box(
                    std::str::from_utf8(field)
                        .ok()
                        .and_then(|f| f.parse::<IpAddr>().ok()),
                );
            }
        })
    });
    group.finish();
}

// A plain `main` instead of `criterion_group!`/`criterion_main!`: the macro's generated `pub fn`
// has no doc comment and would trip the crate's `missing_docs` lint.
fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_parse_ip(&mut c);
    bench_parse_entry(&mut c);
    bench_parse_batch(&mut c);
    c.final_summary();
}
