//! `RATE_LIMIT_PER_IP`: at most N `POST /logs` requests a second from one client address, in
//! memory that does not grow with the number of clients.
//!
//! Each client address is hashed (with a per-process random seed, so that nobody can aim at one
//! cell) to one of a fixed 65,536 cells: 512 KiB however many clients come. A cell holds a GCRA
//! "theoretical arrival time" (the generic cell rate algorithm: a token bucket in one integer),
//! updated with compare-and-swap, so the check takes no lock. A client may spend a second's worth
//! of requests at once, then one every 1/N s. Two clients whose addresses share a cell share its
//! budget; with 65,536 cells that needs a busy neighbour in the same cell, and it errs towards
//! limiting, never towards letting more through.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

const CELLS: usize = 1 << 16;

/// A per-client-address request-rate limit.
pub struct RateLimiter {
    /// Theoretical arrival time of each cell's next request, in nanoseconds since `epoch`.
    cells: Box<[AtomicU64]>,
    /// Nanoseconds one request uses up: 1 s / N.
    interval: u64,
    /// How far ahead of now a cell may run: a burst of N requests, less the one being let in.
    burst: u64,
    epoch: Instant,
    hasher: RandomState,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_second = 1_000_000_000 / self.interval;
        write!(f, "RateLimiter({per_second}/s per client)")
    }
}

impl RateLimiter {
    /// A limit of `per_second` requests a second per client address; `None` for 0 (no limit).
    pub fn new(per_second: u32) -> Option<RateLimiter> {
        let interval = 1_000_000_000 / u64::from(per_second).max(1);
        (per_second > 0).then(|| RateLimiter {
            cells: (0..CELLS).map(|_| AtomicU64::new(0)).collect(),
            interval,
            burst: interval * (u64::from(per_second) - 1),
            epoch: Instant::now(),
            hasher: RandomState::default(),
        })
    }

    /// Lets one request from `client` through, or says how long it must wait.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.check_at(client, self.now())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn check_at(&self, client: IpAddr, now: u64) -> Result<(), Duration> {
        let cell = &self.cells[self.hasher.hash_one(client) as usize % CELLS];
        let mut arrival = cell.load(Ordering::Relaxed);
        loop {
            let next = arrival.max(now);
            let ahead = next - now;
            if ahead > self.burst {
                return Err(Duration::from_nanos(ahead - self.burst));
            }
            match cell.compare_exchange_weak(
                arrival,
                next + self.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => arrival = current,
            }
        }
    }

    /// The memory of the cells, the same for any number of clients.
    pub fn memory_bytes(&self) -> usize {
        size_of_val(&*self.cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn zero_is_no_limit() {
        assert!(RateLimiter::new(0).is_none());
    }

    #[test]
    fn a_burst_of_n_then_one_every_nth_of_a_second() {
        let limiter = RateLimiter::new(10).unwrap();
        let client = ip("192.0.2.1");
        let start = 5 * SECOND;
        for i in 0..10 {
            assert_eq!(limiter.check_at(client, start), Ok(()), "request {i}");
        }
        assert_eq!(
            limiter.check_at(client, start),
            Err(Duration::from_millis(100))
        );
        assert_eq!(
            limiter.check_at(client, start + SECOND / 20),
            Err(Duration::from_millis(50))
        );
        assert_eq!(limiter.check_at(client, start + SECOND / 10), Ok(()));
        assert!(limiter.check_at(client, start + SECOND / 10).is_err());
        // A quiet second refills the whole burst, and no more.
        let later = start + 3 * SECOND;
        for _ in 0..10 {
            assert_eq!(limiter.check_at(client, later), Ok(()));
        }
        assert!(limiter.check_at(client, later).is_err());
    }

    #[test]
    fn clients_have_their_own_budgets() {
        let limiter = RateLimiter::new(1).unwrap();
        assert_eq!(limiter.check_at(ip("192.0.2.1"), SECOND), Ok(()));
        assert!(limiter.check_at(ip("192.0.2.1"), SECOND).is_err());
        // Two addresses share a cell one time in 65,536; these three do not all share one.
        let others = ["192.0.2.2", "2001:db8::1", "198.51.100.7"];
        let passed = others
            .iter()
            .filter(|c| limiter.check_at(ip(c), SECOND).is_ok())
            .count();
        assert!(passed >= 2, "{passed}");
    }

    #[test]
    fn memory_does_not_grow_with_clients() {
        let limiter = RateLimiter::new(100).unwrap();
        let before = limiter.memory_bytes();
        for i in 0..100_000u32 {
            let _ = limiter.check(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(limiter.memory_bytes(), before);
        assert_eq!(before, 512 << 10);
    }

    #[test]
    fn concurrent_checks_never_let_more_than_the_burst_through() {
        let limiter = RateLimiter::new(1000).unwrap();
        let client = ip("203.0.113.9");
        let now = 10 * SECOND;
        let passed: usize = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..1000)
                            .filter(|_| limiter.check_at(client, now).is_ok())
                            .count()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(passed, 1000);
    }
}
