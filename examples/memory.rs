//! Measures what the exact store costs per distinct address, as process RSS growth and as the
//! store's own `memory_bytes()`.
//!
//! ```text
//! cargo run --release --example memory -- [N_IPV4] [N_IPV6]     # defaults 10000000 1000000
//! cargo run --release --example memory -- --windows [N_IPV4] [N_IPV6]
//! cargo run --release --example memory -- --prefixes 3000 [N_IPV4] [N_IPV6]
//! cargo run --release --example memory -- --approx [N_IPV4] [N_IPV6]
//! ```
//!
//! `--approx` measures COUNT_MODE=approx (HLL_PRECISION 14, no data directory) instead, with
//! `--windows` its windows' rings too. A sketch's growth is tens of KiB, the size of the code
//! that pages in as its paths first run: so a first counter of the same kind, kept alive to
//! the end (its heap is never reused), takes a million draws of each family before anything
//! is measured, and the anonymous part (heap) is printed alone too.
//!
//! `--windows` counts through the exact counter with the default windows (5m,1h,24h) on a
//! synthetic clock, each address at a random time over the last 24 hours, so every address
//! carries a stamp. `--prefixes N` draws IPv6 addresses from N random /48 prefixes with random
//! interface identifiers, as real traffic shares prefixes (random /32 to /64 networks).
//!
//! Addresses are drawn one at a time from a seeded RNG (no list is built, so nothing but the
//! store grows), duplicates are skipped by the insert's return value, and each family goes into
//! its own store, measured in its own phase. The IPv4 store is kept alive during the IPv6 phase so
//! that its pages cannot be reused and hide IPv6 growth. Pass 0 to skip a family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ip_counter::counter::clock::ManualClock;
use ip_counter::counter::windows::WindowSettings;
use ip_counter::counter::{Counter, Observation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The counter's clock, in seconds: any fixed moment.
const NOW: i64 = 1_750_000_000;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let windows = take_flag(&mut args, "--windows");
    let approx = take_flag(&mut args, "--approx");
    let prefixes = match args.iter().position(|a| a == "--prefixes") {
        Some(at) if at + 1 < args.len() => {
            let n: usize = args[at + 1].parse().expect("--prefixes N");
            args.drain(at..at + 2);
            n
        }
        _ => 0,
    };
    let mut args = args.into_iter();
    let mut count = |default: u64| match args.next() {
        None => Ok(default),
        Some(a) => a
            .replace('_', "")
            .parse::<u64>()
            .map_err(|e| format!("{a:?}: {e}")),
    };
    let (n_v4, n_v6) = match (count(10_000_000), count(1_000_000)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("usage: memory [N_IPV4] [N_IPV6]: {e}");
            return ExitCode::from(2);
        }
    };
    if n_v4 > 1 << 32 {
        eprintln!("N_IPV4 is at most 2^32");
        return ExitCode::from(2);
    }

    let mut rng = StdRng::seed_from_u64(0x1DC0);
    println!("baseline RSS: {:.1} MiB", rss() as f64 / (1 << 20) as f64);
    let settings = WindowSettings {
        windows: [("5m", 300), ("1h", 3600), ("24h", 86_400)]
            .map(|(l, s)| (l.to_owned(), Duration::from_secs(s)))
            .into(),
        max_clock_skew: Duration::from_secs(300),
    };
    let counter = || {
        let clock = Arc::new(ManualClock::at(NOW));
        if approx {
            return Counter::approx(14, windows.then_some(&settings), None, clock);
        }
        Counter::exact(windows.then_some(&settings), None, clock).unwrap()
    };
    let networks: Vec<u128> = (0..prefixes)
        .map(|_| u128::from(rng.random::<u64>() >> 16) << 80)
        .collect();

    let warm = approx.then(|| {
        let warm = counter();
        for i in 0..1_000_000u32 {
            let time = NonZeroU32::new(NOW as u32 - i % 86_400);
            for ip in [
                IpAddr::V4(Ipv4Addr::from_bits(rng.random())),
                IpAddr::V6(Ipv6Addr::from_bits(rng.random())),
            ] {
                warm.record_one(Observation { ip, time }).unwrap();
            }
        }
        warm
    });

    let v4 = counter();
    measure("IPv4", &v4, n_v4, &mut rng, |rng| {
        IpAddr::V4(Ipv4Addr::from_bits(rng.random()))
    });

    let v6 = counter();
    measure("IPv6", &v6, n_v6, &mut rng, |rng| {
        let bits = match networks.len() {
            0 => rng.random(),
            n => networks[rng.random_range(0..n)] | u128::from(rng.random::<u64>()),
        };
        IpAddr::V6(Ipv6Addr::from_bits(bits))
    });

    // The stores are only dropped here, after both phases.
    drop((warm, v4, v6));
    ExitCode::SUCCESS
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() < before
}

/// Records `n` distinct addresses from `next`, each at a random time over the last day, into
/// the empty `store` and prints the cost.
fn measure(
    family: &str,
    store: &Counter,
    n: u64,
    rng: &mut StdRng,
    mut next: impl FnMut(&mut StdRng) -> IpAddr,
) {
    if n == 0 {
        return;
    }
    let (rss_before, heap_before) = (rss(), store.memory_bytes());
    let anon_before = anon_rss();
    let approx = store.mode().0 == "approx";
    let mut distinct = 0;
    while distinct < n {
        let ip = next(rng);
        let time = NonZeroU32::new((NOW - rng.random_range(0..86_400)) as u32);
        let new = store.record_one(Observation { ip, time }).unwrap();
        // A sketch says new only when it changed: with it, count draws (random 32-bit draws
        // repeat about n / 2^33 of the time: 0.1 % at 10M, well inside its error).
        distinct += u64::from(new || approx);
    }
    let (rss_after, heap_after) = (rss(), store.memory_bytes());
    let anon_growth = anon_rss().saturating_sub(anon_before);
    if approx {
        let estimate = store.counts().total();
        println!(
            "{family}: {n} random draws: estimate {estimate} ({:+.2} %); RSS growth {} KiB, of \
             which anonymous (heap) {} KiB, the rest file-backed (code first run here); \
             memory_bytes() {} KiB",
            (estimate as f64 / n as f64 - 1.0) * 100.0,
            rss_after.saturating_sub(rss_before) >> 10,
            anon_growth >> 10,
            heap_after >> 10
        );
        return;
    }
    assert_eq!(
        store.counts().total(),
        n,
        "the store disagrees with its own inserts"
    );
    let windows: Vec<String> = store
        .windows()
        .into_iter()
        .map(|(label, count)| format!("{label} {count}"))
        .collect();

    let per = |bytes: u64| bytes as f64 / n as f64;
    let rss_growth = rss_after.saturating_sub(rss_before);
    let heap_growth = heap_after.saturating_sub(heap_before) as u64;
    println!(
        "{family}: {n} distinct: RSS growth {:.1} MiB = {:.2} B/address; memory_bytes() {:.1} MiB = {:.2} B/address{}",
        rss_growth as f64 / (1 << 20) as f64,
        per(rss_growth),
        heap_after as f64 / (1 << 20) as f64,
        per(heap_growth),
        if windows.is_empty() {
            String::new()
        } else {
            format!("; windows {}", windows.join(", "))
        }
    );
}

/// This process's resident set size in bytes, from `/proc/self/statm`.
fn rss() -> u64 {
    let statm = procfs::process::Process::myself()
        .and_then(|p| p.statm())
        .expect("reading /proc/self/statm");
    statm.resident * procfs::page_size()
}

/// Its anonymous resident memory (heap, stacks): the resident pages not backed by a file,
/// so not the binary's code and data, which page in as code paths first run.
fn anon_rss() -> u64 {
    let statm = procfs::process::Process::myself()
        .and_then(|p| p.statm())
        .expect("reading /proc/self/statm");
    (statm.resident - statm.shared) * procfs::page_size()
}
