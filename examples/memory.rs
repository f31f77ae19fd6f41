//! Measures what the exact store costs per distinct address, as process RSS growth and as the
//! store's own `memory_bytes()`.
//!
//! ```text
//! cargo run --release --example memory -- [N_IPV4] [N_IPV6]     # defaults 10000000 1000000
//! ```
//!
//! Addresses are drawn one at a time from a seeded RNG (no list is built, so nothing but the
//! store grows), duplicates are skipped by the insert's return value, and each family goes into
//! its own store, measured in its own phase. The IPv4 store is kept alive during the IPv6 phase so
//! that its pages cannot be reused and hide IPv6 growth. Pass 0 to skip a family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;

use ip_counter::counter::exact::AddressSet;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
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

    let v4 = AddressSet::default();
    measure("IPv4", &v4, n_v4, || {
        IpAddr::V4(Ipv4Addr::from_bits(rng.random()))
    });

    let v6 = AddressSet::default();
    measure("IPv6", &v6, n_v6, || {
        IpAddr::V6(Ipv6Addr::from_bits(rng.random()))
    });

    // The two stores are only dropped here, after both phases.
    drop((v4, v6));
    ExitCode::SUCCESS
}

/// Inserts `n` distinct addresses from `next` into the empty `store` and prints the cost.
fn measure(family: &str, store: &AddressSet, n: u64, mut next: impl FnMut() -> IpAddr) {
    if n == 0 {
        return;
    }
    let (rss_before, heap_before) = (rss(), store.memory_bytes());
    let mut distinct = 0;
    while distinct < n {
        distinct += u64::from(store.insert(next()));
    }
    let (rss_after, heap_after) = (rss(), store.memory_bytes());
    assert_eq!(
        store.counts().total(),
        n,
        "the store disagrees with its own inserts"
    );

    let per = |bytes: u64| bytes as f64 / n as f64;
    let rss_growth = rss_after.saturating_sub(rss_before);
    let heap_growth = heap_after.saturating_sub(heap_before) as u64;
    println!(
        "{family}: {n} distinct: RSS growth {:.1} MiB = {:.2} B/address; memory_bytes() {:.1} MiB = {:.2} B/address",
        rss_growth as f64 / (1 << 20) as f64,
        per(rss_growth),
        heap_after as f64 / (1 << 20) as f64,
        per(heap_growth),
    );
}

/// This process's resident set size in bytes, from `/proc/self/statm`.
fn rss() -> u64 {
    let statm = procfs::process::Process::myself()
        .and_then(|p| p.statm())
        .expect("reading /proc/self/statm");
    statm.resident * procfs::page_size()
}
