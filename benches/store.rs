//! The exact store against bare single-threaded baselines in the same groups, so that the
//! results read as ratios: `std::collections::HashSet` (the fast, large choice) and
//! `roaring::RoaringBitmap` (the compact choice the IPv4 set's layout is measured against);
//! neither has locks, sharding or IPv4/IPv6 dispatch.
//!
//! `cargo bench --bench store` (about two minutes on two cores); one group with
//! `cargo bench --bench store -- contains_ipv4`.

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{
    BatchSize, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use ip_counter::counter::clock::ManualClock;
use ip_counter::counter::exact::AddressSet;
use ip_counter::counter::windows::WindowSettings;
use ip_counter::counter::{Counter, Observation, event_time};
use ip_counter::wal::{DataDir, Durability, Settings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roaring::RoaringBitmap;

const THREADS: usize = 4;

/// `n` distinct uniformly random values, in random order.
fn distinct<T: Eq + std::hash::Hash + Copy>(n: usize, mut next: impl FnMut() -> T) -> Vec<T> {
    let mut seen = HashSet::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    while values.len() < n {
        let v = next();
        if seen.insert(v) {
            values.push(v);
        }
    }
    values
}

fn ipv4s(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    distinct(n, || rng.random())
}

fn v4(bits: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from_bits(bits))
}

/// Few samples and flat sampling once an iteration takes tens of milliseconds.
fn size_group(group: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    if n >= 100_000 {
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
    } else {
        group.sample_size(30).sampling_mode(SamplingMode::Auto);
    }
    group.throughput(Throughput::Elements(n as u64));
}

fn batch(n: usize) -> BatchSize {
    if n >= 100_000 {
        BatchSize::PerIteration
    } else {
        BatchSize::SmallInput
    }
}

/// Inserts all of `values` into a fresh set made by `new`, once per iteration.
fn bench_fresh_inserts<T: Copy, S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    values: &[T],
    new: impl Fn() -> S + Copy,
    insert: impl Fn(&mut S, T) -> bool + Copy,
) {
    let n = values.len();
    group.bench_with_input(BenchmarkId::new(name, n), values, |b, values| {
        b.iter_batched(
            new,
            |mut set| {
                for &v in values {
                    black_box(insert(&mut set, v));
                }
                set
            },
            batch(n),
        )
    });
}

fn insert_ipv4(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert_ipv4");
    for n in [1_000, 10_000, 1_000_000] {
        let ips = ipv4s(n, 1);
        size_group(&mut group, n);
        bench_fresh_inserts(
            &mut group,
            "AddressSet",
            &ips,
            AddressSet::default,
            |s, ip| s.insert(v4(ip)),
        );
        bench_fresh_inserts(
            &mut group,
            "RoaringBitmap",
            &ips,
            RoaringBitmap::new,
            |s, ip| s.insert(ip),
        );
        bench_fresh_inserts(&mut group, "HashSet<u32>", &ips, HashSet::new, |s, ip| {
            s.insert(ip)
        });
    }
    group.finish();
}

fn contains_ipv4(c: &mut Criterion) {
    let mut group = c.benchmark_group("contains_ipv4");
    for n in [1_000, 10_000, 1_000_000] {
        let ips = ipv4s(n, 2);
        let store = AddressSet::default();
        let set: HashSet<u32> = ips.iter().copied().collect();
        let roaring: RoaringBitmap = ips.iter().copied().collect();
        for &ip in &ips {
            store.insert(v4(ip));
        }
        size_group(&mut group, n);
        group.bench_with_input(BenchmarkId::new("AddressSet", n), &ips, |b, ips| {
            b.iter(|| ips.iter().filter(|&&ip| store.contains(v4(ip))).count())
        });
        group.bench_with_input(BenchmarkId::new("RoaringBitmap", n), &ips, |b, ips| {
            b.iter(|| ips.iter().filter(|&&ip| roaring.contains(ip)).count())
        });
        group.bench_with_input(BenchmarkId::new("HashSet<u32>", n), &ips, |b, ips| {
            b.iter(|| ips.iter().filter(|ip| set.contains(ip)).count())
        });
    }
    group.finish();
}

/// Four threads each insert their own `per_thread` addresses into one fresh store (thread
/// start-up included), against one thread doing all of it: the store alone, and a bare set.
fn concurrent_insert_ipv4(c: &mut Criterion) {
    let mut group = c.benchmark_group("concurrent_insert_ipv4");
    for per_thread in [1_000, 100_000] {
        let n = THREADS * per_thread;
        let ips = ipv4s(n, 3);
        size_group(&mut group, n);
        group.bench_with_input(
            BenchmarkId::new(format!("AddressSet/{THREADS} threads"), per_thread),
            &ips,
            |b, ips| {
                b.iter_batched(
                    AddressSet::default,
                    |store| {
                        std::thread::scope(|s| {
                            for chunk in ips.chunks(per_thread) {
                                let store = &store;
                                s.spawn(move || {
                                    for &ip in chunk {
                                        black_box(store.insert(v4(ip)));
                                    }
                                });
                            }
                        });
                        store
                    },
                    batch(n),
                )
            },
        );
        group.bench_with_input(
            BenchmarkId::new("AddressSet/1 thread", per_thread),
            &ips,
            |b, ips| {
                b.iter_batched(
                    AddressSet::default,
                    |store| {
                        for &ip in ips {
                            black_box(store.insert(v4(ip)));
                        }
                        store
                    },
                    batch(n),
                )
            },
        );
        group.bench_with_input(
            BenchmarkId::new("HashSet<u32>/1 thread", per_thread),
            &ips,
            |b, ips| {
                b.iter_batched(
                    HashSet::<u32>::new,
                    |mut set| {
                        for &ip in ips {
                            black_box(set.insert(ip));
                        }
                        set
                    },
                    batch(n),
                )
            },
        );
    }
    group.finish();
}

/// A million new random addresses into a store that already holds three million, from two
/// threads in batches of 10,000 (two HTTP batch clients) or 500,000 (`count`'s chunks):
/// `AddressSet::insert` one at a time, against `AddressSet::insert_many`.
fn batch_insert_ipv4(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_insert_ipv4");
    let n = 1_000_000;
    let ips: Vec<IpAddr> = ipv4s(4 * n, 5).into_iter().map(v4).collect();
    let (before, ips) = ips.split_at(3 * n);
    let filled = || {
        let store = AddressSet::default();
        store.insert_many(before.iter().copied());
        store
    };
    size_group(&mut group, n);
    for batch_len in [10_000, 500_000] {
        let run = |insert: fn(&AddressSet, &[IpAddr]) -> u64| {
            move |b: &mut criterion::Bencher<'_>, ips: &[IpAddr]| {
                b.iter_batched(
                    filled,
                    |store| {
                        std::thread::scope(|s| {
                            for half in ips.chunks(n / 2) {
                                let store = &store;
                                s.spawn(move || {
                                    for batch in half.chunks(batch_len) {
                                        black_box(insert(store, batch));
                                    }
                                });
                            }
                        });
                        store
                    },
                    BatchSize::PerIteration,
                )
            }
        };
        group.bench_with_input(
            BenchmarkId::new("insert", batch_len),
            ips,
            run(|s, batch| batch.iter().filter(|&&ip| s.insert(ip)).count() as u64),
        );
        group.bench_with_input(
            BenchmarkId::new("insert_many", batch_len),
            ips,
            run(|s, batch| s.insert_many(batch.iter().copied())),
        );
    }
    group.finish();
}

fn insert_ipv6(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert_ipv6");
    let n = 10_000;
    let mut rng = StdRng::seed_from_u64(4);
    // Real IPv6 clients share prefixes: a few hundred /48s, random interface identifiers.
    let prefixes: Vec<u128> = (0..300)
        .map(|_| u128::from(rng.random::<u64>() >> 16) << 80)
        .collect();
    let ips = distinct(n, || {
        prefixes[rng.random_range(0..prefixes.len())] | u128::from(rng.random::<u64>())
    });
    size_group(&mut group, n);
    bench_fresh_inserts(
        &mut group,
        "AddressSet",
        &ips,
        AddressSet::default,
        |s, ip| s.insert(IpAddr::V6(Ipv6Addr::from_bits(ip))),
    );
    bench_fresh_inserts(&mut group, "HashSet<u128>", &ips, HashSet::new, |s, ip| {
        s.insert(ip)
    });
    group.finish();
}

/// Lookups of present addresses in a set of a million, and inserts of new ones into it: where
/// the IPv6 layout's searches cost most.
fn ipv6_at_a_million(c: &mut Criterion) {
    let mut group = c.benchmark_group("ipv6_at_a_million");
    let mut rng = StdRng::seed_from_u64(6);
    let prefixes: Vec<u128> = (0..3000)
        .map(|_| u128::from(rng.random::<u64>() >> 16) << 80)
        .collect();
    let ips = distinct(1_100_000, || {
        prefixes[rng.random_range(0..prefixes.len())] | u128::from(rng.random::<u64>())
    });
    let (held, fresh) = ips.split_at(1_000_000);
    let probe = &held[..100_000];
    let store = AddressSet::default();
    let set: HashSet<u128> = held.iter().copied().collect();
    for &ip in held {
        store.insert(IpAddr::V6(Ipv6Addr::from_bits(ip)));
    }
    size_group(&mut group, probe.len());
    group.bench_function("contains/AddressSet", |b| {
        b.iter(|| {
            probe
                .iter()
                .filter(|&&ip| store.contains(IpAddr::V6(Ipv6Addr::from_bits(ip))))
                .count()
        })
    });
    group.bench_function("contains/HashSet<u128>", |b| {
        b.iter(|| probe.iter().filter(|ip| set.contains(ip)).count())
    });
    let filled = || {
        let store = AddressSet::default();
        store.insert_many(held.iter().map(|&ip| IpAddr::V6(Ipv6Addr::from_bits(ip))));
        store
    };
    group.bench_function("insert 100k new/AddressSet", |b| {
        b.iter_batched(
            filled,
            |store| {
                for &ip in fresh {
                    black_box(store.insert(IpAddr::V6(Ipv6Addr::from_bits(ip))));
                }
                store
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The counter as `POST /logs` batches reach it, with its data directory (buffered, the
/// default): 2 million fresh IPv4 addresses in batches of 10,000, each entry timestamped in
/// the last day, with the default windows and without (`WINDOWS=`). The ratio of the two is
/// the counting part of `make windows-cost`'s bulk figure, without HTTP, parsing or clients.
fn record_batches(c: &mut Criterion) {
    const NOW: i64 = 1_800_000_000;
    let mut group = c.benchmark_group("record_batches");
    let n = 2_000_000;
    size_group(&mut group, n);
    let mut rng = StdRng::seed_from_u64(12);
    let observations: Vec<Observation> = ipv4s(n, 12)
        .into_iter()
        .map(|bits| Observation {
            ip: v4(bits),
            time: event_time(NOW - rng.random_range(0..86_400)),
        })
        .collect();
    let settings = WindowSettings {
        windows: [("5m", 300), ("1h", 3600), ("24h", 86_400)]
            .map(|(label, secs)| (label.to_owned(), Duration::from_secs(secs)))
            .into(),
        max_clock_skew: Duration::from_secs(300),
    };
    for (name, windows) in [("windows off", None), ("windows on", Some(&settings))] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().unwrap();
                    let data_dir = DataDir::open(Settings {
                        dir: dir.path().to_owned(),
                        durability: Durability::Buffered,
                        fsync_interval: Duration::from_secs(1),
                        snapshot_interval: Duration::from_secs(3600),
                    })
                    .unwrap();
                    let clock = Arc::new(ManualClock::at(NOW));
                    let counter = Counter::exact(windows, Some(Duration::ZERO), clock).unwrap();
                    counter.recover(&data_dir).unwrap();
                    (counter, data_dir, dir)
                },
                |(counter, data_dir, dir)| {
                    for batch in observations.chunks(10_000) {
                        black_box(counter.record(batch).unwrap());
                    }
                    (counter, data_dir, dir)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2));
    targets = insert_ipv4, contains_ipv4, concurrent_insert_ipv4, batch_insert_ipv4, insert_ipv6,
        ipv6_at_a_million, record_batches
}
criterion_main!(benches);
