//! Writes a synthetic nginx/Apache combined-format access log for benchmarks (fixed seed).
//!
//! Addresses: 70% from a pool of returning clients, 25% random IPv4, 5% IPv6 from a /32, so
//! the file has many repeats and a few million distinct addresses, like a busy site's day.
//!
//! ```sh
//! cargo run --release --example gen_access_log -- OUT [LINES] [POOL]   # 8,000,000 lines ≈ 1.2 GB
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PATHS: [&str; 6] = [
    "/",
    "/index.html",
    "/api/v1/items?page=2&sort=desc",
    "/static/js/app.3f9a1c.js",
    "/images/logo.png",
    "/login",
];

const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "curl/8.5.0",
];

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .expect("usage: gen_access_log OUT [LINES] [POOL]");
    let lines: u64 = args.next().map_or(8_000_000, |n| n.parse().expect("LINES"));
    let pool: usize = args.next().map_or(1_000_000, |n| n.parse().expect("POOL"));
    let mut rng = StdRng::seed_from_u64(2020);
    let returning: Vec<Ipv4Addr> = (0..pool)
        .map(|_| Ipv4Addr::from(rng.random::<u32>()))
        .collect();
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&out)?);
    for i in 0..lines {
        let roll = rng.random_range(0..100);
        let ip = if roll < 70 {
            IpAddr::V4(returning[rng.random_range(0..pool)])
        } else if roll < 95 {
            IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()))
        } else {
            let bits = (0x2001_0db8u128 << 96) | u128::from(rng.random::<u64>());
            IpAddr::V6(Ipv6Addr::from(bits))
        };
        let (h, m, s) = (i / 3_600_000 % 24, i / 60_000 % 60, i / 1000 % 60);
        let path = PATHS[rng.random_range(0..PATHS.len())];
        let agent = AGENTS[rng.random_range(0..AGENTS.len())];
        let (status, bytes) = if rng.random_range(0..20) == 0 {
            (404, 153)
        } else {
            (200, rng.random_range(200..50_000))
        };
        writeln!(
            w,
            "{ip} - - [24/Jun/2020:{h:02}:{m:02}:{s:02} +0000] \"GET {path} HTTP/1.1\" {status} {bytes} \"https://www.example.com/\" \"{agent}\""
        )?;
    }
    w.flush()
}
