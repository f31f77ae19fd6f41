//! Measures issue 13's two counting modes against each other, in process: the exact counter
//! (`Counter::in_memory()`, COUNT_MODE=exact without windows or data directory) and the
//! approximate one (`Counter::approx`, COUNT_MODE=approx without windows, HLL_PRECISION 14).
//!
//! ```text
//! cargo run --release --example count_modes -- [--sizes 10000000,100000000] [--ipv6 10000000] [--rounds 3]
//! ```
//!
//! For each N of `--sizes` (IPv4) and for `--ipv6` (0 skips it) both counters take N distinct
//! addresses through `Counter::record` in batches of 10,000 `Observation::untimed`, and the
//! markdown table gives for each: the insert rate (M addresses/s, median of `--rounds`), the
//! approximate counter's rate as a ratio to the exact one's in the same round (the figure to
//! trust on a shared machine), the final count and its relative error against N, the counter's
//! own `memory_bytes()` and the growth of the process's RSS.
//!
//! Addresses are distinct by construction, so N is the true count and no truth set is kept: a
//! seeded bijection of the index 0..N (IPv4: a xorshift-multiply permutation of u32; IPv6: a
//! random-looking u128 whose low half is a permutation of u64). They are drawn into one reused
//! batch of 10,000 outside the timed region, so only `record` is timed and no list of N grows.
//! In a round both counters take the same addresses, in alternating order from round to round;
//! each round draws a new set. The sketch's SipHash key is drawn per counter from the OS, as the
//! service draws one per data directory, so the estimates differ between rounds.
//!
//! Each counter is measured in its own phase, from just before it is created to its last batch,
//! and every counter is kept alive until the end, so that no phase reuses pages another freed
//! (as `examples/memory.rs` does). The exact counter's figures include its 2 MiB IPv4 block
//! index, which exists before the first address, also in an IPv6 phase. Keeping them alive does
//! not keep the allocator from handing a phase the buffers an earlier counter freed as it grew
//! (a block's members are reallocated an eighth larger at a time), so the table's RSS figure is
//! round 1's, and even there a phase after an exact one may show less than its own cost: pass a
//! single size (`--sizes 100000000 --ipv6 0`, or `--sizes '' --ipv6 10000000`) for a phase alone.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/addresses.rs"]
mod addresses;

use addresses::Addresses;
use ip_counter::counter::clock::SystemClock;
use ip_counter::counter::{Counter, Observation};

/// Observations a `record` call takes.
const BATCH: usize = 10_000;
/// HLL_PRECISION of the approximate counter (the default).
const LG_K: u8 = 14;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Exact,
    Approx,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Exact => "exact",
            Mode::Approx => "approx (lg_k 14)",
        }
    }

    fn counter(self) -> Counter {
        match self {
            Mode::Exact => Counter::in_memory(),
            Mode::Approx => Counter::approx(LG_K, None, None, Arc::new(SystemClock)),
        }
    }
}

/// What one counter did with one address set.
struct Phase {
    /// M addresses/s, `record` time only.
    rate: f64,
    count: u64,
    memory_bytes: usize,
    rss_growth: u64,
}

/// Creates a `mode` counter and records addresses `0..n` of `addrs` into it, in batches of
/// [`BATCH`] drawn into `batch`. Returns the counter, to be kept alive, and its figures.
fn phase(mode: Mode, addrs: Addresses, n: u64, batch: &mut Vec<Observation>) -> (Counter, Phase) {
    let rss_before = rss();
    let counter = mode.counter();
    let mut recorded = Duration::ZERO;
    let mut new = 0;
    let mut done = 0u64;
    while done < n {
        let take = (n - done).min(BATCH as u64);
        batch.clear();
        batch.extend((done..done + take).map(|i| Observation::untimed(addrs.get(i))));
        let start = Instant::now();
        new += counter
            .record(batch)
            .expect("an in-memory counter takes every batch");
        recorded += start.elapsed();
        done += take;
    }
    let rss_growth = rss().saturating_sub(rss_before);
    let count = counter.counts().total();
    if mode == Mode::Exact {
        assert_eq!(
            (count, new),
            (n, n),
            "the exact counter lost or invented addresses"
        );
    }
    let memory_bytes = counter.memory_bytes();
    let figures = Phase {
        rate: n as f64 / recorded.as_secs_f64() / 1e6,
        count,
        memory_bytes,
        rss_growth,
    };
    (counter, figures)
}

/// This process's resident set size in bytes, from `/proc/self/statm`.
fn rss() -> u64 {
    let statm = procfs::process::Process::myself()
        .and_then(|p| p.statm())
        .expect("reading /proc/self/statm");
    statm.resident * procfs::page_size()
}

struct Options {
    sizes: Vec<u64>,
    ipv6: u64,
    rounds: usize,
}

fn parse_count(v: &str) -> Result<u64, String> {
    v.replace('_', "")
        .parse()
        .map_err(|e| format!("{v:?}: {e}"))
}

fn parse_options() -> Result<Options, String> {
    let mut opts = Options {
        sizes: vec![10_000_000, 100_000_000],
        ipv6: 10_000_000,
        rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--sizes" if v.is_empty() => opts.sizes.clear(),
            "--sizes" => {
                opts.sizes = v.split(',').map(parse_count).collect::<Result<_, _>>()?;
            }
            "--ipv6" => opts.ipv6 = parse_count(&v)?,
            "--rounds" => opts.rounds = parse_count(&v)? as usize,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if opts.rounds == 0 || opts.sizes.iter().any(|&n| n == 0 || n > 1 << 32) {
        return Err("--rounds must be at least 1 and each size in 1..=2^32".into());
    }
    Ok(opts)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn millions(n: u64) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else {
        n.to_string()
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() -> ExitCode {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("usage: count_modes [--sizes N,N] [--ipv6 N] [--rounds R]: {e}");
            return ExitCode::from(2);
        }
    };
    let mut points: Vec<(bool, u64)> = opts.sizes.iter().map(|&n| (false, n)).collect();
    if opts.ipv6 > 0 {
        points.push((true, opts.ipv6));
    }
    let load_before = load();
    let started = Instant::now();
    let baseline = rss();
    let mut batch = Vec::with_capacity(BATCH);
    // results[point][mode]: one Phase a round.
    let mut results: Vec<[Vec<Phase>; 2]> = points.iter().map(|_| [vec![], vec![]]).collect();
    let mut kept = Vec::new();
    for round in 0..opts.rounds {
        for (p, &(v6, n)) in points.iter().enumerate() {
            let addrs = Addresses::new(v6, 0x1DC0 + (round * points.len() + p) as u64);
            let mut order = [Mode::Exact, Mode::Approx];
            if round % 2 == 1 {
                order.reverse();
            }
            for mode in order {
                let (counter, figures) = phase(mode, addrs, n, &mut batch);
                eprintln!(
                    "round {} {} {} {}: {:.1} M/s, count {}, RSS growth {}",
                    round + 1,
                    if v6 { "IPv6" } else { "IPv4" },
                    millions(n),
                    mode.name(),
                    figures.rate,
                    figures.count,
                    size(figures.rss_growth)
                );
                results[p][usize::from(mode == Mode::Approx)].push(figures);
                kept.push(counter);
            }
        }
    }

    println!(
        "{} round(s), batches of {BATCH} through `Counter::record`; baseline RSS {}; \
         load average {} before, {} after; {:.0} s\n",
        opts.rounds,
        size(baseline),
        load_before,
        load(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "| addresses | N | counter | insert M/s (median) | rate / exact's (median; each round) | count (round 1) | relative error (each round) | memory_bytes() (round 1) | RSS growth (round 1; later rounds) | RSS B/address (round 1) |"
    );
    println!("| --- | ---: | --- | ---: | --- | ---: | --- | ---: | ---: | ---: |");
    for (p, &(v6, n)) in points.iter().enumerate() {
        let [exact, approx] = &results[p];
        for (mode, phases) in [(Mode::Exact, exact), (Mode::Approx, approx)] {
            let ratios: Vec<f64> = phases
                .iter()
                .zip(exact)
                .map(|(a, e)| a.rate / e.rate)
                .collect();
            let ratio = if mode == Mode::Exact {
                "1".to_owned()
            } else {
                let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
                format!("{:.2}× ({})", median(ratios.clone()), each.join(", "))
            };
            let errors: Vec<String> = phases
                .iter()
                .map(|f| format!("{:+.3} %", (f.count as f64 / n as f64 - 1.0) * 100.0))
                .collect();
            let later: Vec<String> = phases[1..].iter().map(|f| size(f.rss_growth)).collect();
            let rss_growth = phases[0].rss_growth;
            println!(
                "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {:.2} |",
                if v6 { "IPv6" } else { "IPv4" },
                millions(n),
                mode.name(),
                median(phases.iter().map(|f| f.rate).collect()),
                ratio,
                phases[0].count,
                errors.join(", "),
                size(phases[0].memory_bytes as u64),
                if later.is_empty() {
                    size(rss_growth)
                } else {
                    format!("{} ({})", size(rss_growth), later.join(", "))
                },
                rss_growth as f64 / n as f64
            );
        }
    }
    drop(kept);
    ExitCode::SUCCESS
}
