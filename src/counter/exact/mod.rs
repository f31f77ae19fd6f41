//! The exact counter: every distinct address kept in memory ([`AddressSet`]), each new one
//! written to the data directory's log before it is counted when persistence is on, and with
//! time windows on, each address's latest event time as a stamp counted by [`Windows`].
//!
//! Only addresses new to the set are written, and a repeat takes no lock and does no I/O: the
//! set is checked first, then again under the log's writer, so that an address any request can
//! find in the set has been written (see [`crate::wal`]'s writer). With windows, an address
//! seen at a later step is written again with its time before its stamp moves, at most once a
//! step. What it logs and snapshots is in `durable.rs`.

mod bits;
mod durable;
mod ipv4;
mod ipv6;
mod set;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use bits::{Bits, Family, Run, Sightings, StampedRun};
pub use durable::{ExactState, log_record, log_record_addr};
pub use set::AddressSet;

use super::clock::Clock;
use super::log::Log;
use super::outbox::Outbox;
use super::windows::{Change, WindowSettings, Windows};
use super::{Counts, Gauge, Observation};
use crate::wal::{DataDir, Durable, RecoveryError, SnapshotDone, StorageError, Wal};

/// The exact kind: its state (the set, its windows) and its log once recovery has started it.
/// The log's state `W` is the exact state, or one that holds it (`COUNT_MODE=auto`).
#[derive(Debug)]
pub struct Exact<W: Durable = ExactState> {
    state: Arc<ExactState>,
    wal: Log<W>,
    /// Where each logged change also goes, with its time, for a shared store to send on.
    outbox: Option<Arc<Outbox>>,
}

/// How often the sweep thread asks whether stale stamps are due to be cleared.
const SWEEP_POLL: Duration = Duration::from_secs(1);

impl Exact {
    /// Reads `data_dir` back into the set and starts its log.
    pub(super) fn recover(&self, data_dir: &DataDir) -> Result<(), RecoveryError> {
        let wal = data_dir.recover(self.state.clone())?;
        self.wal.start(wal);
        Ok(())
    }
}

impl<W: Durable> Exact<W> {
    /// An empty exact counter, with `windows` when set (and the thread that sweeps their
    /// stale stamps), on `clock`.
    /// With `outbox`, everything written to the log is handed to it too.
    pub(super) fn new(
        windows: Option<&WindowSettings>,
        clock: Arc<dyn Clock>,
        outbox: Option<Arc<Outbox>>,
    ) -> io::Result<Exact<W>> {
        let state = Arc::new(ExactState::new(windows, clock));
        if state.windows.is_some() {
            sweep_stale_stamps(Arc::downgrade(&state))?;
        }
        Ok(Exact {
            state,
            wal: Log::new(),
            outbox,
        })
    }

    /// What it counts, for a log that holds it.
    pub(super) fn state(&self) -> &Arc<ExactState> {
        &self.state
    }

    /// Starts its log on `wal`, which a state holding this one's was recovered into.
    pub(super) fn start(&self, wal: Arc<Wal<W>>) {
        self.wal.start(wal);
    }

    pub(super) fn record_one(&self, observation: Observation) -> Result<bool, StorageError> {
        if let Some(windows) = &self.state.windows {
            return self
                .record_timed(windows, std::slice::from_ref(&observation))
                .map(|n| n == 1);
        }
        let ip = observation.ip;
        let Some(wal) = self.wal.get() else {
            return Ok(self.state.set.insert(ip));
        };
        if self.state.set.contains(ip) {
            return Ok(false);
        }
        let mut writer = wal.writer();
        if self.state.set.contains(ip) {
            return Ok(false);
        }
        writer.append(&durable::log_record(ip))?;
        if let Some(outbox) = &self.outbox {
            outbox.push([(ip, self.arrival())]);
        }
        Ok(self.state.set.insert(ip))
    }

    /// Each new address is written once however often the batch repeats it.
    pub(super) fn record(&self, observations: &[Observation]) -> Result<u64, StorageError> {
        if let Some(windows) = &self.state.windows {
            return self.record_timed(windows, observations);
        }
        let ips = observations.iter().map(|o| o.ip);
        let Some(wal) = self.wal.get() else {
            return Ok(self.state.set.insert_many(ips));
        };
        let mut bits = Bits::distinct(ips);
        if bits.is_empty() {
            return Ok(0);
        }
        let mut writer = wal.writer();
        self.state.set.retain_missing(&mut bits);
        if bits.is_empty() {
            return Ok(0);
        }
        writer.append(&durable::log_records(&bits))?;
        if let Some(outbox) = &self.outbox {
            let now = self.arrival();
            outbox.push(bits.ips().map(|ip| (ip, now)));
        }
        Ok(self.state.set.insert_bits(&mut bits.ipv4, &bits.ipv6))
    }

    /// With windows: each observation stamped, and what changes (new addresses, addresses
    /// seen at a later step) written first with its time, under the log's writer: one record
    /// an address, its latest time.
    fn record_timed(
        &self,
        windows: &Windows,
        observations: &[Observation],
    ) -> Result<u64, StorageError> {
        let set = &self.state.set;
        let now = self.state.clock.now();
        let order = windows.order(now);
        let stamper = windows.stamper(now);
        let stamped = |o: &Observation| (o.ip, stamper.stamp(o.time));
        let mut sightings = match observations {
            [one] => {
                let (ip, stamp) = stamped(one);
                if self.wal.get().is_some()
                    && set.stamp_of(ip).is_some_and(|at| !order.newer(stamp, at))
                {
                    // A repeat within its step: no lock, no write, as without windows.
                    return Ok(0);
                }
                Sightings::latest(std::iter::once((ip, stamp)), order)
            }
            _ => Sightings::latest(observations.iter().map(stamped), order),
        };
        let observe = |sightings: &Sightings| {
            let changes = set.observe_many(sightings, order);
            windows.apply(&changes, now);
            changes
                .iter()
                .filter(|c| matches!(c, Change::Added(_)))
                .count() as u64
        };
        let Some(wal) = self.wal.get() else {
            return Ok(observe(&sightings));
        };
        let mut writer = wal.writer();
        let new = set.retain_changing(&mut sightings, order);
        if sightings.is_empty() {
            return Ok(0);
        }
        match writer.append(&durable::timed_records(&sightings, windows, order)) {
            Ok(()) => {}
            // An address already counted keeps being acknowledged while the disk refuses: only
            // its later time is at risk, until the snapshot that repairs the log writes it.
            Err(_) if new == 0 => {}
            Err(e) => return Err(e),
        }
        if let Some(outbox) = &self.outbox {
            outbox.push(
                sightings
                    .ips()
                    .map(|(ip, stamp)| (ip, windows.time_of(stamp, order))),
            );
        }
        Ok(observe(&sightings))
    }

    /// Now, in seconds, as the time a change without windows is sent with.
    fn arrival(&self) -> u32 {
        self.state.clock.now().clamp(1, i64::from(u32::MAX)) as u32
    }

    /// Calls `f` with every member and its time (the start of its stamp's step; with windows
    /// off, now), one part of the set at a time: what a shared store is sent in full.
    pub(super) fn for_each_member(&self, mut f: impl FnMut(&[(IpAddr, u32)])) {
        let mut chunk = Vec::new();
        let Some(windows) = &self.state.windows else {
            let now = self.arrival();
            let _ = self.state.set.for_each_run(|run| {
                chunk.clear();
                match run {
                    Run::Ipv4(r) => {
                        chunk.extend(r.iter().map(|&a| (Ipv4Addr::from_bits(a).into(), now)))
                    }
                    Run::Ipv6(r) => {
                        chunk.extend(r.iter().map(|&a| (Ipv6Addr::from_bits(a).into(), now)))
                    }
                }
                f(&chunk);
                Ok::<(), ()>(())
            });
            return;
        };
        let order = windows.order(self.state.clock.now());
        let time = |stamp| windows.time_of(stamp, order);
        let _ = self.state.set.for_each_stamped_run(|run| {
            chunk.clear();
            match run {
                StampedRun::Ipv4(r) => chunk.extend(
                    r.iter()
                        .map(|&(a, s)| (Ipv4Addr::from_bits(a).into(), time(s))),
                ),
                StampedRun::Ipv6(r) => chunk.extend(
                    r.iter()
                        .map(|&(a, s)| (Ipv6Addr::from_bits(a).into(), time(s))),
                ),
            }
            f(&chunk);
            Ok::<(), ()>(())
        });
    }

    /// Each window's label and count now, shortest first; none with windows off.
    pub(super) fn windows(&self) -> Vec<(String, u64)> {
        self.state.windows.as_ref().map_or_else(Vec::new, |w| {
            w.counts(self.state.clock.now())
                .into_iter()
                .map(|(label, n)| (label.to_owned(), n))
                .collect()
        })
    }

    /// Entries further ahead than `MAX_CLOCK_SKEW`, counted at arrival.
    pub(super) fn clock_skew_entries(&self) -> u64 {
        self.state.windows.as_ref().map_or(0, |w| w.skewed())
    }

    pub(super) async fn settle(&self) -> Result<(), StorageError> {
        self.wal.settle().await
    }

    pub(super) fn counts(&self) -> Counts {
        self.state.set.counts()
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.state.set.memory_bytes()
    }

    pub(super) fn writable(&self) -> bool {
        self.wal.writable()
    }

    /// Its data directory's gauges, when it has one.
    pub(super) fn gauges(&self) -> Vec<Gauge> {
        self.wal.gauges()
    }

    pub(super) fn snapshot(&self) -> io::Result<Option<SnapshotDone>> {
        self.wal.snapshot()
    }

    pub(super) fn close(&self) -> io::Result<()> {
        self.wal.close()
    }
}

/// Clears stale stamps whenever [`Windows::sweep_due`] says so, on a thread of its own that
/// ends with the counter.
fn sweep_stale_stamps(state: Weak<ExactState>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("ip-counter-sweep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(SWEEP_POLL);
                let Some(state) = state.upgrade() else {
                    return;
                };
                if let Some(windows) = &state.windows {
                    sweep(&state.set, windows, state.clock.now());
                }
            }
        })
        .map(drop)
}

/// Clears the stale stamps of `set` if a sweep is due at `now`.
fn sweep(set: &AddressSet, windows: &Windows, now: i64) {
    if let Some(stale) = windows.sweep_due(now) {
        set.clear_stale(&stale);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::num::NonZeroU32;
    use std::time::Duration as StdDuration;

    use proptest::prelude::*;

    use super::*;
    use crate::counter::clock::ManualClock;

    fn address(i: u8) -> IpAddr {
        match i % 3 {
            0 => IpAddr::V4(Ipv4Addr::from_bits(u32::from(i) << 20 | 7)),
            1 => IpAddr::V6(Ipv6Addr::from_bits(0x2001_0db8 << 96 | u128::from(i) << 9)),
            // The mapped form of an IPv4 address of the first kind.
            _ => IpAddr::V6(Ipv4Addr::from_bits(u32::from(i - 2) << 20 | 7).to_ipv6_mapped()),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Wait(i64),
        Batch(Vec<(u8, Option<i64>)>),
    }

    fn op() -> impl Strategy<Value = Op> {
        let sighting = (any::<u8>(), proptest::option::of(-400i64..100_000));
        prop_oneof![
            3 => (0i64..300).prop_map(Op::Wait),
            1 => (0i64..40_000).prop_map(Op::Wait),
            6 => proptest::collection::vec(sighting, 1..6).prop_map(Op::Batch),
        ]
    }

    proptest! {
        /// The exact kind with windows, its real sets (IPv4, IPv6, mapped) and a synthetic
        /// clock, against a brute-force model of each address's latest step, at every step.
        #[test]
        fn window_counts_equal_a_brute_force_model(
            start in 1_600_000_000i64..1_700_000_000,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let settings = WindowSettings {
                windows: vec![
                    ("5m".into(), StdDuration::from_secs(300)),
                    ("1h".into(), StdDuration::from_secs(3600)),
                    ("24h".into(), StdDuration::from_secs(86_400)),
                ],
                max_clock_skew: StdDuration::from_secs(300),
            };
            let clock = Arc::new(ManualClock::at(start));
            let exact: Exact = Exact::new(Some(&settings), clock.clone(), None).unwrap();
            let mut latest: HashMap<IpAddr, Option<i64>> = HashMap::new();
            let mut now = start;
            for op in ops {
                sweep(&exact.state.set, exact.state.windows.as_ref().unwrap(), now);
                match op {
                    Op::Wait(secs) => {
                        now += secs;
                        clock.set(now);
                    }
                    Op::Batch(sightings) => {
                        let observations: Vec<Observation> = sightings
                            .iter()
                            .map(|&(i, ago)| Observation {
                                ip: address(i),
                                time: ago.and_then(|a| NonZeroU32::new((now - a) as u32)),
                            })
                            .collect();
                        let mut new = 0;
                        for o in &observations {
                            let at = match o.time.map(|t| i64::from(t.get())) {
                                Some(t) if t > now + 300 => now,
                                Some(t) => t,
                                None => now,
                            };
                            let step = at.div_euclid(5);
                            let step = (step > now.div_euclid(5) - 17_280).then_some(step);
                            let ip = o.ip.to_canonical();
                            new += u64::from(!latest.contains_key(&ip));
                            let entry = latest.entry(ip).or_insert(None);
                            *entry = (*entry).max(step);
                        }
                        let got = if observations.len() == 1 {
                            u64::from(exact.record_one(observations[0]).unwrap())
                        } else {
                            exact.record(&observations).unwrap()
                        };
                        prop_assert_eq!(got, new);
                    }
                }
                let now_step = now.div_euclid(5);
                let expected: Vec<u64> = [60i64, 720, 17_280]
                    .iter()
                    .map(|&w| {
                        latest
                            .values()
                            .filter(|s| s.is_some_and(|s| s > now_step - w && s <= now_step))
                            .count() as u64
                    })
                    .collect();
                let got: Vec<u64> = exact.windows().into_iter().map(|(_, n)| n).collect();
                prop_assert_eq!(got, expected, "at {}", now);
                prop_assert_eq!(exact.counts().total(), latest.len() as u64);
            }
        }
    }
}
