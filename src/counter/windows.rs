//! Sliding time windows: how many distinct addresses were last seen in the last 5 minutes, hour,
//! day (`WINDOWS`).
//!
//! Each address keeps one stamp, the step of its latest event time (a step is the smallest
//! window / 60, whole seconds), not a set per bucket. [`Windows`] keeps a histogram of the stamps,
//! one bucket per step over the largest window (plus `MAX_CLOCK_SKEW` ahead), with a sum per
//! 256 buckets: a stamp that changes moves one address between buckets, a bucket is emptied as
//! its step leaves the largest window, and a window's count is the sum of its steps' buckets, a
//! few hundred numbers whatever the traffic (O(1) in the addresses). Adding to and taking from
//! buckets commutes, so changes need no order and a batch's are applied together. A count is
//! exact to a step: an address counts in window W while its latest step is among the last
//! W/step steps, the current one included.
//!
//! A stamp is 2 bytes: the step modulo [`PERIOD`], 0 for none (seen, but before the largest
//! window: it counts in the total only). Stamps are read relative to now, so a sweep
//! ([`Windows::sweep_due`]) clears the stale ones before they could wrap.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{RwLock, RwLockReadGuard, RwLockUpgradableReadGuard, RwLockWriteGuard};

use super::EventTime;

/// A stamp: 0 for none, else 1 + the step modulo `PERIOD`.
pub type Stamp = u16;

/// Steps a stamp can tell apart.
const PERIOD: i64 = u16::MAX as i64;

/// The most steps the largest window may span, so that a stamp never wraps between sweeps
/// (it spans at most the largest window, an eighth of it between sweeps, and the skew).
pub const MAX_STEPS: u64 = 50_000;

/// The most steps `MAX_CLOCK_SKEW` may span.
pub const MAX_SKEW_STEPS: u64 = 5_000;

/// The windows asked for (`WINDOWS`, `MAX_CLOCK_SKEW`), validated by the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSettings {
    /// Each window's label (as written in `WINDOWS`) and length, shortest first.
    pub windows: Vec<(String, Duration)>,
    /// How far ahead of the clock an entry's time may be and still be taken.
    pub max_clock_skew: Duration,
}

impl WindowSettings {
    /// The step: the shortest window / 60, in whole seconds (at least 1).
    pub fn step_secs(&self) -> u64 {
        let shortest = self.windows.iter().map(|(_, w)| w.as_secs()).min();
        (shortest.unwrap_or(60) / 60).max(1)
    }
}

/// Reads stamps against a moment: which step each stands for.
#[derive(Debug, Clone, Copy)]
pub struct Order {
    /// The current step.
    now: i64,
    /// Steps a stamp may be ahead of now.
    ahead: i64,
}

impl Order {
    /// Stamps read at step `now`, up to `ahead` steps ahead of it.
    #[cfg(test)]
    pub fn at(now: i64, ahead: i64) -> Order {
        Order { now, ahead }
    }

    /// The step `stamp` stands for, `None` for no stamp.
    pub fn step(&self, stamp: Stamp) -> Option<i64> {
        if stamp == 0 {
            return None;
        }
        let ahead_by = (i64::from(stamp - 1) - self.now).rem_euclid(PERIOD);
        Some(if ahead_by <= self.ahead {
            self.now + ahead_by
        } else {
            self.now + ahead_by - PERIOD
        })
    }

    /// Whether `a` is a later time than `b` (no stamp is the earliest).
    pub fn newer(&self, a: Stamp, b: Stamp) -> bool {
        self.step(a) > self.step(b)
    }
}

/// The stamp of `step`.
fn stamp_of(step: i64) -> Stamp {
    (step.rem_euclid(PERIOD) + 1) as Stamp
}

/// What recording an observation did to its address's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new address, with this stamp.
    Added(Stamp),
    /// A known address moved to a later stamp.
    Moved {
        /// Its stamp before.
        from: Stamp,
        /// Its stamp now.
        to: Stamp,
    },
}

/// Stamps the entries that arrive at one moment: [`Windows::stamper`].
#[derive(Debug)]
pub struct Stamper<'a> {
    /// Arrival, in seconds.
    now: i64,
    /// The latest time taken as it is (`MAX_CLOCK_SKEW` ahead of now).
    latest: i64,
    /// The first second of the oldest step in the largest window, and that step.
    earliest: i64,
    earliest_step: i64,
    step_secs: u32,
    skewed: &'a AtomicU64,
}

impl Stamper<'_> {
    /// As [`Windows::stamp`].
    pub fn stamp(&self, time: EventTime) -> Stamp {
        let at = match time {
            Some(t) if i64::from(t.get()) > self.latest => {
                self.skewed.fetch_add(1, Ordering::Relaxed);
                self.now
            }
            Some(t) => i64::from(t.get()),
            None => self.now,
        };
        if at < self.earliest {
            return 0;
        }
        // Steps from the earliest: at most the largest window and the skew, so the division is
        // a 32-bit one (a 64-bit division was most of the stamp's cost).
        let from_earliest = u32::try_from(at - self.earliest).unwrap_or(u32::MAX);
        stamp_of(self.earliest_step + i64::from(from_earliest / self.step_secs))
    }
}

/// Steps a chunk of the histogram sums, so that a window's count adds at most a few hundred
/// numbers.
const CHUNK: i64 = 256;

/// The windows' histogram; see the module docs.
#[derive(Debug)]
pub struct Windows {
    step_secs: i64,
    labels: Vec<String>,
    /// Each window's length in steps, shortest first.
    steps: Vec<i64>,
    max_steps: i64,
    skew_secs: i64,
    skew_steps: i64,
    /// Changes and the step moving on take it alone, reads shared.
    state: RwLock<State>,
    /// When the stale stamps are next cleared, as a step.
    next_sweep: AtomicI64,
    /// Entries further ahead than `MAX_CLOCK_SKEW`, counted at arrival instead.
    skewed: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// The current step.
    now: i64,
    /// Addresses per stamped step, at the step modulo their number (a power of two, covering the
    /// largest window and the skew ahead).
    buckets: Vec<i64>,
    /// The sums of `CHUNK` buckets each, by the same index / `CHUNK`.
    chunks: Vec<i64>,
}

impl State {
    fn slot(&self, step: i64) -> usize {
        (step as usize) & (self.buckets.len() - 1)
    }

    /// Adds `n` addresses to `step`.
    fn add(&mut self, step: i64, n: i64) {
        let slot = self.slot(step);
        self.buckets[slot] += n;
        self.chunks[slot / CHUNK as usize] += n;
    }

    /// The addresses stamped in steps `from..=to`, a range shorter than the buckets.
    fn sum(&self, from: i64, to: i64) -> i64 {
        let mut total = 0;
        let mut step = from;
        while step <= to {
            let slot = self.slot(step);
            if slot as i64 % CHUNK == 0 && step + CHUNK - 1 <= to {
                total += self.chunks[slot / CHUNK as usize];
                step += CHUNK;
            } else {
                total += self.buckets[slot];
                step += 1;
            }
        }
        total
    }
}

impl Windows {
    /// The windows of `settings`, starting at `now` (seconds since the Unix epoch).
    pub fn new(settings: &WindowSettings, now: i64) -> Windows {
        let step_secs = settings.step_secs() as i64;
        let steps: Vec<i64> = settings
            .windows
            .iter()
            .map(|(_, w)| (w.as_secs() as i64 / step_secs).max(1))
            .collect();
        let max_steps = steps.iter().copied().max().unwrap_or(1);
        let skew_secs = settings.max_clock_skew.as_secs() as i64;
        let skew_steps = (skew_secs + step_secs - 1) / step_secs;
        debug_assert!(max_steps as u64 <= MAX_STEPS && skew_steps as u64 <= MAX_SKEW_STEPS);
        let len = ((max_steps + skew_steps + 1) as usize)
            .next_power_of_two()
            .max(CHUNK as usize);
        let now = now.div_euclid(step_secs);
        Windows {
            step_secs,
            labels: settings.windows.iter().map(|(l, _)| l.clone()).collect(),
            state: RwLock::new(State {
                now,
                buckets: vec![0; len],
                chunks: vec![0; len / CHUNK as usize],
            }),
            next_sweep: AtomicI64::new(now + max_steps / 8 + 1),
            steps,
            max_steps,
            skew_secs,
            skew_steps,
            skewed: AtomicU64::new(0),
        }
    }

    /// The step of `seconds`.
    fn step(&self, seconds: i64) -> i64 {
        seconds.div_euclid(self.step_secs)
    }

    /// How stamps read at `now` (seconds).
    pub fn order(&self, now: i64) -> Order {
        Order {
            now: self.step(now),
            ahead: self.skew_steps,
        }
    }

    /// The stamp of an entry with `time` that arrived at `now` (seconds): its own time, arrival
    /// when it has none or is further ahead than `MAX_CLOCK_SKEW` (counted in
    /// [`Windows::skewed`]), no stamp when it is before the largest window.
    pub fn stamp(&self, time: EventTime, now: i64) -> Stamp {
        self.stamper(now).stamp(time)
    }

    /// Stamps entries arriving at `now` (seconds) as [`Windows::stamp`] does, with what does
    /// not depend on the entry worked out once.
    pub fn stamper(&self, now: i64) -> Stamper<'_> {
        let now_step = self.step(now);
        Stamper {
            now,
            latest: now + self.skew_secs,
            earliest: (now_step - self.max_steps + 1) * self.step_secs,
            earliest_step: now_step - self.max_steps + 1,
            step_secs: self.step_secs as u32,
            skewed: &self.skewed,
        }
    }

    /// The stamp of a time read back from the data directory (0: none): as [`Windows::stamp`],
    /// but a time ahead of the clock (which moved back) is now, and not counted as skew.
    pub fn stamp_at(&self, time: u32, now: i64) -> Stamp {
        if time == 0 {
            return 0;
        }
        let now_step = self.step(now);
        let step = self.step(i64::from(time)).min(now_step + self.skew_steps);
        if step <= now_step - self.max_steps {
            0
        } else {
            stamp_of(step)
        }
    }

    /// The time `stamp` stands for, read with `order`: the start of its step in seconds since
    /// the Unix epoch; 0 for none. What the data directory keeps.
    pub fn time_of(&self, stamp: Stamp, order: Order) -> u32 {
        order.step(stamp).map_or(0, |step| {
            (step * self.step_secs).clamp(1, i64::from(u32::MAX)) as u32
        })
    }

    /// Entries whose time was further ahead than `MAX_CLOCK_SKEW`.
    pub fn skewed(&self) -> u64 {
        self.skewed.load(Ordering::Relaxed)
    }

    /// The state at `now` (seconds) at least, shared: moved on first if `now` is a later step.
    fn at(&self, now: i64) -> RwLockReadGuard<'_, State> {
        let step = self.step(now);
        let state = self.state.upgradable_read();
        if state.now >= step {
            return RwLockUpgradableReadGuard::downgrade(state);
        }
        let mut state = RwLockUpgradableReadGuard::upgrade(state);
        self.advance(&mut state, step);
        RwLockWriteGuard::downgrade(state)
    }

    /// Moves on to step `to`: each step leaving the largest window is emptied, so that its
    /// bucket can hold a later step.
    fn advance(&self, state: &mut State, to: i64) {
        let len = state.buckets.len() as i64;
        let from = (state.now - self.max_steps + 1).max(to - self.max_steps - len);
        for step in from..=to - self.max_steps {
            let slot = state.slot(step);
            let n = std::mem::take(&mut state.buckets[slot]);
            state.chunks[slot / CHUNK as usize] -= n;
        }
        state.now = to;
    }

    /// Accounts for `changes`, made at `now` (seconds). Their order does not matter: each adds
    /// to or takes from one bucket, and a step before the largest window has left it already.
    /// The histogram is held alone meanwhile (atomic additions under a shared lock cost a
    /// fifth of what windows added to a batch).
    pub fn apply(&self, changes: &[Change], now: i64) {
        if changes.is_empty() {
            return;
        }
        let mut state = self.state.write();
        let step = self.step(now);
        if state.now < step {
            self.advance(&mut state, step);
        }
        let order = Order {
            now: state.now,
            ahead: self.skew_steps,
        };
        let earliest = state.now - self.max_steps;
        let live = |stamp| order.step(stamp).filter(|&s| s > earliest);
        for &change in changes {
            let (from, to) = match change {
                Change::Added(to) => (0, to),
                Change::Moved { from, to } => (from, to),
            };
            if let Some(step) = live(from) {
                state.add(step, -1);
            }
            if let Some(step) = live(to) {
                state.add(step, 1);
            }
        }
    }

    /// Each window's label and count at `now` (seconds), shortest first.
    pub fn counts(&self, now: i64) -> Vec<(&str, u64)> {
        let state = self.at(now);
        self.labels
            .iter()
            .map(String::as_str)
            .zip(
                self.steps
                    .iter()
                    .map(|&w| state.sum(state.now - w + 1, state.now).max(0) as u64),
            )
            .collect()
    }

    /// Whether the stale stamps should be cleared now (an eighth of the largest window after
    /// the last sweep); if so, which stamps are stale.
    pub fn sweep_due(&self, now: i64) -> Option<StaleBefore> {
        let now = self.step(now);
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due
            || self
                .next_sweep
                .compare_exchange(
                    due,
                    now + self.max_steps / 8 + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return None;
        }
        Some(StaleBefore {
            order: Order {
                now,
                ahead: self.skew_steps,
            },
            before: now - self.max_steps,
        })
    }
}

/// Which stamps a sweep clears: those at or before the step that has left the largest window.
#[derive(Debug, Clone, Copy)]
pub struct StaleBefore {
    order: Order,
    before: i64,
}

impl StaleBefore {
    /// Whether `stamp` is stale.
    pub fn stale(&self, stamp: Stamp) -> bool {
        self.order.step(stamp).is_some_and(|s| s <= self.before)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::num::NonZeroU32;

    use proptest::prelude::*;

    use super::*;

    fn settings() -> WindowSettings {
        WindowSettings {
            windows: vec![
                ("1m".into(), Duration::from_secs(60)),
                ("5m".into(), Duration::from_secs(300)),
                ("1h".into(), Duration::from_secs(3600)),
            ],
            max_clock_skew: Duration::from_secs(30),
        }
    }

    /// What a test does: time passes, or an address is seen with a time relative to now.
    #[derive(Debug, Clone)]
    enum Op {
        Wait(i64),
        See { ip: u8, ago: i64 },
        Untimed(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0i64..200).prop_map(Op::Wait),
            // Up to most of a stamp's period: the sweep runs between requests, as its thread
            // does, and a stamp must not wrap before it.
            1 => (0i64..60_000).prop_map(Op::Wait),
            8 => (any::<u8>(), -120i64..4000).prop_map(|(ip, ago)| Op::See { ip, ago }),
            2 => any::<u8>().prop_map(Op::Untimed),
        ]
    }

    proptest! {
        /// Against a brute-force model: each address's latest step (an entry too far ahead taken
        /// at arrival, one before the largest window as no time), counted by window at every
        /// step. The stamps live in a map, as the sets keep them.
        #[test]
        fn window_counts_equal_a_brute_force_model(
            start in 1_600_000_000i64..1_700_000_000,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let settings = settings();
            let step = settings.step_secs() as i64;
            let windows = Windows::new(&settings, start);
            let mut now = start;
            let mut stamps: HashMap<u8, Stamp> = HashMap::new();
            let mut latest: HashMap<u8, Option<i64>> = HashMap::new();
            let mut skewed = 0;
            for op in ops {
                if let Some(stale) = windows.sweep_due(now) {
                    stamps.values_mut().filter(|s| stale.stale(**s)).for_each(|s| *s = 0);
                }
                let (ip, time) = match op {
                    Op::Wait(secs) => { now += secs; (None, None) }
                    Op::See { ip, ago } => (Some(ip), NonZeroU32::new((now - ago) as u32)),
                    Op::Untimed(ip) => (Some(ip), None),
                };
                if let Some(ip) = ip {
                    // The model.
                    let at = match time {
                        Some(t) if i64::from(t.get()) > now + 30 => { skewed += 1; now }
                        Some(t) => i64::from(t.get()),
                        None => now,
                    };
                    let s = at.div_euclid(step);
                    let s = (s > now.div_euclid(step) - 3600).then_some(s);
                    let entry = latest.entry(ip).or_insert(None);
                    *entry = (*entry).max(s);
                    // The windows.
                    let stamp = windows.stamp(time, now);
                    match stamps.get(&ip).copied() {
                        None => {
                            stamps.insert(ip, stamp);
                            windows.apply(&[Change::Added(stamp)], now);
                        }
                        Some(from) if windows.order(now).newer(stamp, from) => {
                            stamps.insert(ip, stamp);
                            windows.apply(&[Change::Moved { from, to: stamp }], now);
                        }
                        Some(_) => {}
                    }
                }
                let now_step = now.div_euclid(step);
                let expected: Vec<u64> = [60i64, 300, 3600].iter().map(|&w| {
                    latest.values().filter(|s| s.is_some_and(|s| s > now_step - w && s <= now_step)).count() as u64
                }).collect();
                let got: Vec<u64> = windows.counts(now).into_iter().map(|(_, c)| c).collect();
                prop_assert_eq!(got, expected, "at {}", now);
            }
            prop_assert_eq!(windows.skewed(), skewed);
        }
    }

    #[test]
    fn the_step_is_the_shortest_window_over_sixty() {
        assert_eq!(settings().step_secs(), 1);
        let default = WindowSettings {
            windows: vec![
                ("5m".into(), Duration::from_secs(300)),
                ("1h".into(), Duration::from_secs(3600)),
                ("24h".into(), Duration::from_secs(86_400)),
            ],
            max_clock_skew: Duration::from_secs(60),
        };
        assert_eq!(default.step_secs(), 5);
    }

    #[test]
    fn stamps_read_back_their_step_around_a_wrap() {
        for now in [0i64, 10, PERIOD - 1, PERIOD, 3 * PERIOD + 7] {
            let order = Order { now, ahead: 6 };
            for step in (now - 50_000..=now + 6).step_by(997).chain([now, now + 6]) {
                assert_eq!(
                    order.step(stamp_of(step)),
                    Some(step),
                    "now {now} step {step}"
                );
            }
            assert!(order.newer(stamp_of(now), stamp_of(now - 1)));
            assert!(order.newer(stamp_of(now - 40_000), 0));
        }
    }
}
