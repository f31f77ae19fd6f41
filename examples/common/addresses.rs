//! Distinct addresses for the examples that measure counters: a seeded bijection of an index,
//! so N addresses are N distinct ones and no truth set is needed. Included with `#[path]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A bijection of u32 (Wellons' lowbias32), so distinct inputs give distinct addresses.
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// A bijection of u64 (splitmix64's finalizer).
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// N distinct addresses of one family, drawn by a seeded bijection of their index.
#[derive(Clone, Copy)]
pub struct Addresses {
    pub v6: bool,
    a: u64,
    b: u64,
    c: u64,
}

impl Addresses {
    pub fn new(v6: bool, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Addresses {
            v6,
            a: rng.random(),
            b: rng.random(),
            c: rng.random(),
        }
    }

    /// The address of index `i`: distinct for distinct `i` below 2^32 (IPv4) or 2^64 (IPv6).
    pub fn get(self, i: u64) -> IpAddr {
        if self.v6 {
            let lo = mix64(i.wrapping_add(self.a)) ^ self.b;
            let hi = mix64(i ^ self.c);
            IpAddr::V6(Ipv6Addr::from_bits(u128::from(hi) << 64 | u128::from(lo)))
        } else {
            let ip = mix32((i as u32).wrapping_add(self.a as u32)) ^ self.b as u32;
            IpAddr::V4(Ipv4Addr::from_bits(ip))
        }
    }
}
