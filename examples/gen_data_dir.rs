//! Writes a data directory holding `N_IPV4` random IPv4 and `N_IPV6` random IPv6 addresses the
//! way a long-running service leaves one: 95% folded into the snapshot, the last 5% in the log
//! as single-entry writes (one frame each, the slowest kind to replay). For
//! `scripts/restart-time.sh`.
//!
//! ```sh
//! cargo run --release --example gen_data_dir -- DIR [N_IPV4] [N_IPV6]
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ip_counter::counter::clock::SystemClock;
use ip_counter::counter::{Counter, Observation};
use ip_counter::wal::{DataDir, Durability, Settings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: gen_data_dir DIR [N_IPV4] [N_IPV6]"),
    );
    let n4: u64 = args.next().map_or(10_000_000, |a| a.parse().unwrap());
    let n6: u64 = args.next().map_or(1_000_000, |a| a.parse().unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let settings = Settings {
        dir: dir.clone(),
        durability: Durability::Buffered,
        fsync_interval: Duration::from_secs(1),
        snapshot_interval: Duration::from_secs(3600),
    };
    let data_dir = DataDir::open(settings).unwrap();
    let store = Counter::exact(None, Some(Duration::ZERO), Arc::new(SystemClock)).unwrap();
    store.recover(&data_dir).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut random = |v4: bool| {
        Observation::untimed(if v4 {
            IpAddr::V4(Ipv4Addr::from_bits(rng.random()))
        } else {
            // Global unicast, never IPv4-mapped.
            IpAddr::V6(Ipv6Addr::from_bits(0x2 << 124 | rng.random::<u128>() >> 4))
        })
    };
    // Until the counts are 95% of the targets: batches, folded into a snapshot.
    let bulk = |target: u64| target / 20 * 19;
    while store.counts().ipv4 < bulk(n4) || store.counts().ipv6 < bulk(n6) {
        let counts = store.counts();
        let want4 = (bulk(n4) - counts.ipv4.min(bulk(n4))).min(100_000);
        let want6 = (bulk(n6) - counts.ipv6.min(bulk(n6))).min(100_000);
        let mut batch: Vec<Observation> = (0..want4).map(|_| random(true)).collect();
        batch.extend((0..want6).map(|_| random(false)));
        store.record(&batch).unwrap();
    }
    let snapshot = store.snapshot().unwrap().expect("a data directory");
    // The rest one at a time, as single-entry requests write them.
    while store.counts().ipv4 < n4 {
        store.record_one(random(true)).unwrap();
    }
    while store.counts().ipv6 < n6 {
        store.record_one(random(false)).unwrap();
    }
    store.close().unwrap();
    let counts = store.counts();
    println!(
        "{}: {} IPv4, {} IPv6; snapshot of {} addresses, {} bytes",
        dir.display(),
        counts.ipv4,
        counts.ipv6,
        snapshot.records,
        snapshot.bytes
    );
}
