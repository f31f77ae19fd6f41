//! The approximate kind (`COUNT_MODE=approx`): one HyperLogLog sketch per family (Apache
//! DataSketches HLL_8, `lg_k` = `HLL_PRECISION`), fixed memory whatever the traffic, relative
//! standard error 1.04 / sqrt(2^lg_k). docs/sketch-choice.md says why this crate.
//!
//! Addresses are hashed with SipHash-1-3 under a 128-bit key drawn once per data directory and
//! kept in it, so that no client can choose addresses that skew the estimate, and sketches of
//! one directory always agree. An address is new when it changes the sketch (the estimate
//! moves); only those are written to the log, before the sketch takes them: a `probe` copy
//! finds them first, so a refused write leaves the counted sketch as it was. Most addresses of
//! a large count change nothing and cost no I/O.
//!
//! With time windows ([`ring`]), each window keeps a ring of per-step sketches; an address is
//! logged, with its time, when it changes the total or any step's sketch.
//!
//! Data directory, format version 3 (windows off): log records of 16 bytes (the address, IPv4
//! as IPv4-mapped IPv6); a snapshot of one 24-byte record (the key, `lg_k`, zeros), then the
//! two sketches as bytes (1-byte records: each sketch's length as a little-endian `u32`, then
//! its DataSketches serialization, IPv4 first), then the floor (the exact counts a switch of
//! `COUNT_MODE=auto` started from, two little-endian `u64`, zeros otherwise). Version 4
//! (windows on): log records of 20 bytes, the address then its event time as a little-endian
//! `u32` (seconds since the Unix epoch); the snapshot's bytes go on after the floor with the
//! windows' rings ([`ring::Rings::write`]). Either version reads back with windows on or off.
//! The records are laid out as the exact kind's (versions 1 and 2), which `COUNT_MODE=auto`
//! relies on.

mod ring;

use std::io::{self, Read, Seek, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use datasketches::hash::value::raw_bytes;
use datasketches::hll::{Coupon, HllSketch, HllType};
use parking_lot::Mutex;
use siphasher::sip::SipHasher13;

use super::clock::Clock;
use super::exact::Family;
use super::log::Log;
use super::windows::WindowSettings;
use super::{Counts, EventTime, Gauge, Observation};
use crate::wal::format::{SnapshotWriter, Version, records};
use crate::wal::{DataDir, Durable, RecoveryError, StorageError, Wal};
use ring::Rings;

/// The format versions of an approximate data directory: without windows, with.
pub const APPROX_VERSIONS: [Version; 2] = [3, 4];
/// Bytes of the snapshot's first section's one record: key, `lg_k`, reserved zeros.
const HEADER_RECORD: usize = 24;

/// What the log and snapshots keep: the key, both families' sketches and the windows' rings.
#[derive(Debug)]
pub struct ApproxState {
    lg_k: u8,
    /// Set at construction without a data directory, else read back or drawn at recovery.
    key: OnceLock<[u8; 16]>,
    sketches: Mutex<Sketches>,
    /// The estimates of `live`, rounded, for lock-free reads.
    estimates: [AtomicU64; 2],
    /// With windows: how they read time.
    timing: Option<Timing>,
    /// Entries further ahead than `MAX_CLOCK_SKEW`, counted at arrival instead.
    skewed: AtomicU64,
    /// The exact counts when `COUNT_MODE=auto` switched to this sketch (0 otherwise): the
    /// counts reported are never below them, so that none goes down across the switch.
    floor: [AtomicU64; 2],
}

#[derive(Debug)]
struct Timing {
    skew_secs: i64,
    clock: Arc<dyn Clock>,
}

/// `live` is what is counted; `probe` runs ahead by what is about to be logged.
#[derive(Debug)]
struct Sketches {
    live: Counted,
    probe: Option<Counted>,
    /// Snapshot bytes read back and not parsed yet (frames split them anywhere), and their
    /// format version.
    loaded: Vec<u8>,
    loaded_version: Version,
}

/// A sketch per family and, with windows, their rings.
#[derive(Debug, Clone)]
struct Counted {
    totals: [HllSketch; 2],
    rings: Option<Rings>,
}

impl Counted {
    /// Counts `coupon` of `family`, in the windows at `second` when it has one; whether the
    /// total's sketch changed, and whether any sketch did.
    fn observe(&mut self, family: usize, coupon: Coupon, second: Option<i64>) -> (bool, bool) {
        let total = update(&mut self.totals[family], coupon);
        let windows = match (&mut self.rings, second) {
            (Some(rings), Some(second)) => rings.update(coupon, second),
            _ => false,
        };
        (total, total | windows)
    }

    fn advance(&mut self, now: i64) {
        if let Some(rings) = &mut self.rings {
            rings.advance(now);
        }
    }

    fn memory_bytes(&self) -> usize {
        let totals: usize = self.totals.iter().map(HllSketch::estimated_size).sum();
        totals + self.rings.as_ref().map_or(0, Rings::memory_bytes)
    }
}

/// An address to count, hashed, with the second the windows count it at.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    ip: IpAddr,
    family: usize,
    coupon: Coupon,
    second: Option<i64>,
}

impl ApproxState {
    /// Empty sketches of `2^lg_k` registers, with `windows` on `clock` when set; keyed at
    /// once unless `persistent` (the key is then read back, or drawn at recovery).
    pub(super) fn new(
        lg_k: u8,
        windows: Option<&WindowSettings>,
        clock: Arc<dyn Clock>,
        persistent: bool,
    ) -> ApproxState {
        let now = clock.now();
        let empty = || Counted {
            totals: [sketch(lg_k), sketch(lg_k)],
            rings: windows.map(|w| Rings::new(w, lg_k, now)),
        };
        let state = ApproxState {
            lg_k,
            key: OnceLock::new(),
            sketches: Mutex::new(Sketches {
                live: empty(),
                probe: persistent.then(empty),
                loaded: Vec::new(),
                loaded_version: APPROX_VERSIONS[0],
            }),
            estimates: [AtomicU64::new(0), AtomicU64::new(0)],
            timing: windows.map(|w| Timing {
                skew_secs: w.max_clock_skew.as_secs() as i64,
                clock,
            }),
            skewed: AtomicU64::new(0),
            floor: [AtomicU64::new(0), AtomicU64::new(0)],
        };
        if !persistent {
            let _ = state.key.set(random_key());
        }
        state
    }

    /// A state for `COUNT_MODE=auto` to switch to, keyed at once (its first snapshot is
    /// written before anything is logged). [`ApproxState::seed`] and
    /// [`ApproxState::seed_observations`] fill it, [`ApproxState::continue_from`] finishes it.
    pub(super) fn switched(
        lg_k: u8,
        windows: Option<&WindowSettings>,
        clock: Arc<dyn Clock>,
        persistent: bool,
    ) -> ApproxState {
        let state = ApproxState::new(lg_k, windows, clock, persistent);
        let _ = state.key.set(random_key());
        state
    }

    /// From now on it never reports less than `floor`, and counts skew on from `skewed`.
    pub(super) fn continue_from(&self, floor: Counts, skewed: u64) {
        self.floor[0].store(floor.ipv4, Ordering::Relaxed);
        self.floor[1].store(floor.ipv6, Ordering::Relaxed);
        self.skewed.store(skewed, Ordering::Relaxed);
    }

    /// Counts `seen` addresses, each with its time (0: before the largest window), without
    /// logging them: what an exact set holds.
    pub(super) fn seed(&self, seen: &[(IpAddr, u32)]) {
        let now = self.now();
        let sightings: Vec<Sighting> = seen
            .iter()
            .map(|&(ip, time)| Sighting {
                second: self.second_read_back(time, now),
                ..self.sighting(&Observation::untimed(ip), now)
            })
            .collect();
        self.seed_sightings(&sightings, now);
    }

    /// Counts `observations` without logging them: what an exact kind recorded meanwhile.
    pub(super) fn seed_observations(&self, observations: &[Observation]) {
        let now = self.now();
        let sightings: Vec<Sighting> = observations.iter().map(|o| self.sighting(o, now)).collect();
        self.seed_sightings(&sightings, now);
    }

    fn seed_sightings(&self, sightings: &[Sighting], now: i64) {
        let mut sketches = self.sketches.lock();
        let sketches = &mut *sketches;
        for counted in std::iter::once(&mut sketches.live).chain(&mut sketches.probe) {
            counted.advance(now);
            for s in sightings {
                counted.observe(s.family, s.coupon, s.second);
            }
        }
        self.publish(sketches);
    }

    /// The second a time read back (a record's, a seeded one's) counts at in the windows: none
    /// for 0, and a time ahead of the clock (which moved back) is now, as the exact kind reads
    /// it.
    fn second_read_back(&self, time: u32, now: i64) -> Option<i64> {
        let timing = self.timing.as_ref()?;
        (time != 0).then(|| i64::from(time).min(now + timing.skew_secs))
    }

    /// A state to read a directory into offline (`ip-counter verify`): its key and sketches
    /// come from the directory; windows are not read.
    pub fn reading() -> ApproxState {
        let clock = Arc::new(super::clock::SystemClock);
        ApproxState::new(14, None, clock, true)
    }

    /// Finishes reading a directory back: the snapshot's sketches parsed, the estimates set.
    pub fn read_back(&self) {
        let mut sketches = self.sketches.lock();
        self.parse_loaded(&mut sketches);
        self.publish(&sketches);
    }

    fn now(&self) -> i64 {
        self.timing.as_ref().map_or(0, |t| t.clock.now())
    }

    /// The second the windows count an entry with `time` at, arrived at `now`: its own time,
    /// else arrival (also when it is further ahead than `MAX_CLOCK_SKEW`, counted as skew).
    /// `None` with windows off.
    fn second_of(&self, time: EventTime, now: i64) -> Option<i64> {
        let timing = self.timing.as_ref()?;
        Some(match time {
            Some(t) if i64::from(t.get()) > now + timing.skew_secs => {
                self.skewed.fetch_add(1, Ordering::Relaxed);
                now
            }
            Some(t) => i64::from(t.get()),
            None => now,
        })
    }

    /// `observation` hashed under the directory's key, with its second.
    fn sighting(&self, observation: &Observation, now: i64) -> Sighting {
        let key = self
            .key
            .get()
            .expect("the key is set before records are taken");
        let mut hasher = SipHasher13::new_with_key(key);
        let family = match Family::of(observation.ip) {
            Family::V4(a) => {
                std::hash::Hasher::write(&mut hasher, &a.to_be_bytes());
                0
            }
            Family::V6(a) => {
                std::hash::Hasher::write(&mut hasher, &a.to_be_bytes());
                1
            }
        };
        let hash = std::hash::Hasher::finish(&hasher).to_le_bytes();
        Sighting {
            ip: observation.ip,
            family,
            coupon: Coupon::from_value(raw_bytes::from_slice(&hash)),
            second: self.second_of(observation.time, now),
        }
    }

    /// The log record of `sighting` in this state's format version.
    fn record(&self, sighting: &Sighting, out: &mut Vec<u8>) {
        out.extend_from_slice(&super::exact::log_record(sighting.ip));
        if self.timing.is_some() {
            let time = sighting
                .second
                .map_or(0, |s| s.clamp(1, i64::from(u32::MAX)));
            out.extend_from_slice(&(time as u32).to_le_bytes());
        }
    }

    fn publish(&self, sketches: &Sketches) {
        for (estimate, sketch) in self.estimates.iter().zip(&sketches.live.totals) {
            estimate.store(sketch.estimate().round() as u64, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> Counts {
        let count = |family: usize| {
            let estimate = self.estimates[family].load(Ordering::Relaxed);
            estimate.max(self.floor[family].load(Ordering::Relaxed))
        };
        Counts {
            ipv4: count(0),
            ipv6: count(1),
        }
    }

    /// Parses snapshot bytes read back, before the log's records are replayed on top.
    fn parse_loaded(&self, sketches: &mut Sketches) {
        if sketches.loaded.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut sketches.loaded);
        let mut rest = &bytes[..];
        for family in 0..2 {
            let mut len = [0; 4];
            let sketch = rest
                .read_exact(&mut len)
                .ok()
                .and_then(|()| {
                    let len = u32::from_le_bytes(len) as usize;
                    let (this, after) = rest.split_at_checked(len)?;
                    rest = after;
                    HllSketch::deserialize(this).ok()
                })
                .unwrap_or_else(|| {
                    // The snapshot's frames passed their checksums, so this is not a torn write.
                    tracing::error!("a snapshot sketch does not deserialize; starting it empty");
                    sketch(self.lg_k)
                });
            sketches.live.totals[family] = sketch;
        }
        // The floor (a directory written before it was kept has none).
        for floor in &self.floor {
            let mut word = [0; 8];
            if rest.read_exact(&mut word).is_ok() {
                floor.store(u64::from_le_bytes(word), Ordering::Relaxed);
            }
        }
        let now = self.now();
        if let (Some(rings), true) = (
            &mut sketches.live.rings,
            sketches.loaded_version == APPROX_VERSIONS[1],
        ) && rings.read(&mut rest, now).is_none()
        {
            tracing::error!("the snapshot's windows do not read back; starting them empty");
        }
        if let Some(probe) = &mut sketches.probe {
            *probe = sketches.live.clone();
        }
        self.publish(sketches);
    }
}

fn sketch(lg_k: u8) -> HllSketch {
    HllSketch::new(lg_k, HllType::Hll8).expect("HLL_PRECISION is validated to 4..=21")
}

/// 128 random bits from the OS.
fn random_key() -> [u8; 16] {
    let mut key = [0; 16];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)) {
        // Still distinct per process: std's RandomState is seeded from the OS too.
        tracing::warn!(error = %e, "cannot read /dev/urandom; keying the sketch from RandomState");
        use std::hash::BuildHasher;
        let a = std::collections::hash_map::RandomState::new().hash_one(1u8);
        let b = std::collections::hash_map::RandomState::new().hash_one(2u8);
        key[..8].copy_from_slice(&a.to_le_bytes());
        key[8..].copy_from_slice(&b.to_le_bytes());
    }
    key
}

/// Updates `sketch` with `coupon`; whether it changed.
fn update(sketch: &mut HllSketch, coupon: Coupon) -> bool {
    let before = sketch.estimate();
    sketch.update_with_coupon(coupon);
    sketch.estimate() != before
}

impl Durable for ApproxState {
    fn version(&self) -> Version {
        APPROX_VERSIONS[usize::from(self.timing.is_some())]
    }

    fn record_len(version: Version) -> Option<usize> {
        match version {
            3 => Some(16),
            4 => Some(20),
            _ => None,
        }
    }

    fn sections(version: Version) -> Option<[usize; 2]> {
        APPROX_VERSIONS
            .contains(&version)
            .then_some([HEADER_RECORD, 1])
    }

    fn replay(&self, version: Version, bytes: &[u8]) {
        let mut sketches = self.sketches.lock();
        self.parse_loaded(&mut sketches);
        let now = self.now();
        let len = Self::record_len(version).expect("replayed versions are known");
        for record in bytes.chunks_exact(len) {
            let ip = super::exact::log_record_addr(record[..16].try_into().expect("16 bytes"));
            let Sighting { family, coupon, .. } = self.sighting(&Observation::untimed(ip), now);
            let second = record.get(16..20).and_then(|time| {
                let time = u32::from_le_bytes(time.try_into().expect("4 bytes"));
                self.second_read_back(time, now)
            });
            sketches.live.observe(family, coupon, second);
            if let Some(probe) = &mut sketches.probe {
                probe.observe(family, coupon, second);
            }
        }
        self.publish(&sketches);
    }

    fn load(&self, version: Version, section: usize, bytes: &[u8]) {
        if section == 0 {
            for record in records::<HEADER_RECORD>(bytes) {
                let key: [u8; 16] = record[..16].try_into().expect("16 bytes");
                let _ = self.key.set(key);
                if record[16] != self.lg_k {
                    tracing::warn!(
                        directory = record[16],
                        setting = self.lg_k,
                        "HLL_PRECISION differs from the data directory's; keeping the directory's"
                    );
                }
            }
            return;
        }
        let mut sketches = self.sketches.lock();
        sketches.loaded_version = version;
        sketches.loaded.extend_from_slice(bytes);
    }

    fn snapshot<W: Write + Seek>(&self, out: &mut SnapshotWriter<W>) -> io::Result<()> {
        let key = self
            .key
            .get()
            .expect("the key is drawn before the first snapshot");
        let mut header = [0; HEADER_RECORD];
        header[..16].copy_from_slice(key);
        header[16] = self.lg_k;
        out.push(0, &header)?;
        let bytes: Vec<u8> = {
            let mut sketches = self.sketches.lock();
            self.parse_loaded(&mut sketches);
            let live = &mut sketches.live;
            live.advance(self.now());
            let mut bytes = Vec::new();
            for sketch in &live.totals {
                let sketch = sketch.serialize();
                bytes.extend_from_slice(&(sketch.len() as u32).to_le_bytes());
                bytes.extend_from_slice(&sketch);
            }
            for floor in &self.floor {
                bytes.extend_from_slice(&floor.load(Ordering::Relaxed).to_le_bytes());
            }
            if let Some(rings) = &live.rings {
                rings.write(&mut bytes);
            }
            bytes
        };
        bytes
            .iter()
            .try_for_each(|b| out.push(1, std::slice::from_ref(b)))
    }

    fn describe(&self) -> String {
        let counts = self.counts();
        format!(
            "about {} unique addresses ({} IPv4, {} IPv6; HyperLogLog, lg_k {})",
            counts.total(),
            counts.ipv4,
            counts.ipv6,
            self.lg_k
        )
    }
}

/// The approximate kind: its state and, once recovery has started it, its log. The log's
/// state `W` is the approximate state, or one that holds it (`COUNT_MODE=auto`).
#[derive(Debug)]
pub struct Approx<W: Durable = ApproxState> {
    state: Arc<ApproxState>,
    wal: Log<W>,
}

impl Approx {
    /// Empty sketches of `2^lg_k` registers, with `windows` on `clock` when set; `persistent`
    /// when a data directory will be read.
    pub(super) fn new(
        lg_k: u8,
        windows: Option<&WindowSettings>,
        clock: Arc<dyn Clock>,
        persistent: bool,
    ) -> Approx {
        Approx::of(Arc::new(ApproxState::new(lg_k, windows, clock, persistent)))
    }

    /// Reads `data_dir` back and starts its log; a new directory gets its key, written in a
    /// snapshot at once, before any record can depend on it.
    pub(super) fn recover(&self, data_dir: &DataDir) -> Result<(), RecoveryError> {
        let wal = data_dir.recover(self.state.clone())?;
        self.state.read_back();
        if self.state.key.get().is_none() {
            let _ = self.state.key.set(random_key());
            wal.snapshot().map_err(|source| RecoveryError::Io {
                file: data_dir.path().join(crate::wal::SNAPSHOT),
                source,
            })?;
        }
        self.wal.start(wal);
        Ok(())
    }
}

impl<W: Durable> Approx<W> {
    /// The kind counting into `state`.
    pub(super) fn of(state: Arc<ApproxState>) -> Approx<W> {
        Approx {
            state,
            wal: Log::new(),
        }
    }

    /// Starts its log on `wal`, which a state holding this one's was recovered into.
    pub(super) fn start(&self, wal: Arc<Wal<W>>) {
        self.wal.start(wal);
    }

    /// Returns the growth of the estimate.
    pub(super) fn record(&self, observations: &[Observation]) -> Result<u64, StorageError> {
        let now = self.state.now();
        let sightings: Vec<Sighting> = observations
            .iter()
            .map(|o| self.state.sighting(o, now))
            .collect();
        let before = self.state.counts().total();
        self.take(&sightings, now)?;
        Ok(self.state.counts().total().saturating_sub(before))
    }

    /// Whether the total's sketch changed: the address was certainly new.
    pub(super) fn record_one(&self, observation: Observation) -> Result<bool, StorageError> {
        let now = self.state.now();
        Ok(self.take(&[self.state.sighting(&observation, now)], now)? > 0)
    }

    /// Counts `sightings` at `now`; how many changed the total's sketch. With a log, those
    /// that change any sketch are found on the probe first and written before the counted
    /// sketches take them.
    fn take(&self, sightings: &[Sighting], now: i64) -> Result<u64, StorageError> {
        let total =
            |counted: &mut Counted, s: &Sighting| counted.observe(s.family, s.coupon, s.second).0;
        let Some(wal) = self.wal.get() else {
            let mut sketches = self.state.sketches.lock();
            sketches.live.advance(now);
            let changed = sightings
                .iter()
                .filter(|s| total(&mut sketches.live, s))
                .count();
            self.state.publish(&sketches);
            return Ok(changed as u64);
        };
        let changing: Vec<Sighting> = {
            let mut sketches = self.state.sketches.lock();
            let probe = sketches.probe.as_mut().expect("a logged state has a probe");
            probe.advance(now);
            sightings
                .iter()
                .copied()
                .filter(|s| probe.observe(s.family, s.coupon, s.second).1)
                .collect()
        };
        if changing.is_empty() {
            return Ok(0);
        }
        let mut records = Vec::with_capacity(changing.len() * 20);
        for sighting in &changing {
            self.state.record(sighting, &mut records);
        }
        let mut writer = wal.writer();
        let mut sketches = self.state.sketches.lock();
        if let Err(e) = writer.append(&records) {
            // The probe is ahead by what was refused: back to what is counted.
            sketches.probe = Some(sketches.live.clone());
            return Err(e);
        }
        sketches.live.advance(now);
        let changed = changing
            .iter()
            .filter(|s| total(&mut sketches.live, s))
            .count();
        self.state.publish(&sketches);
        Ok(changed as u64)
    }

    pub(super) async fn settle(&self) -> Result<(), StorageError> {
        self.wal.settle().await
    }

    pub(super) fn counts(&self) -> Counts {
        self.state.counts()
    }

    /// Each window's label and estimate now, shortest first; none with windows off.
    pub(super) fn windows(&self) -> Vec<(String, u64)> {
        let mut sketches = self.state.sketches.lock();
        sketches.live.advance(self.state.now());
        sketches
            .live
            .rings
            .as_ref()
            .map_or(Vec::new(), Rings::counts)
    }

    /// Entries whose time was further ahead than `MAX_CLOCK_SKEW` (counted at arrival).
    pub(super) fn clock_skew_entries(&self) -> u64 {
        self.state.skewed.load(Ordering::Relaxed)
    }

    /// 1.04 / sqrt(2^lg_k).
    pub(super) fn relative_standard_error(&self) -> f64 {
        1.04 / f64::from(1u32 << self.state.lg_k).sqrt()
    }

    pub(super) fn memory_bytes(&self) -> usize {
        let sketches = self.state.sketches.lock();
        sketches.live.memory_bytes() + sketches.probe.as_ref().map_or(0, Counted::memory_bytes)
    }

    pub(super) fn writable(&self) -> bool {
        self.wal.writable()
    }

    /// Its data directory's gauges, when it has one.
    pub(super) fn gauges(&self) -> Vec<Gauge> {
        self.wal.gauges()
    }

    pub(super) fn snapshot(&self) -> io::Result<Option<crate::wal::SnapshotDone>> {
        self.wal.snapshot()
    }

    pub(super) fn close(&self) -> io::Result<()> {
        self.wal.close()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;
    use crate::counter::clock::{ManualClock, SystemClock};

    fn approx(lg_k: u8) -> Approx {
        Approx::new(lg_k, None, Arc::new(SystemClock), false)
    }

    fn v4(i: u32) -> Observation {
        Observation::untimed(IpAddr::V4(Ipv4Addr::from_bits(
            i.wrapping_mul(2_654_435_761),
        )))
    }

    #[test]
    fn a_million_addresses_are_estimated_within_three_standard_errors() {
        let approx = approx(14);
        let all: Vec<Observation> = (0..1_000_000).map(v4).collect();
        for batch in all.chunks(10_000) {
            approx.record(batch).unwrap();
        }
        let estimate = approx.counts().total() as f64;
        let error = (estimate - 1e6).abs() / 1e6;
        let rse = approx.relative_standard_error();
        assert!((rse - 0.008125).abs() < 1e-6, "{rse}");
        assert!(error < 3.0 * rse, "estimate {estimate}, error {error}");
        // Repeats change nothing.
        assert_eq!(approx.record(&all[..10_000]).unwrap(), 0);
        assert_eq!(approx.counts().total() as f64, estimate);
    }

    #[test]
    fn a_new_address_changes_a_small_sketch_and_a_repeat_never_does() {
        let approx = approx(12);
        assert!(approx.record_one(v4(1)).unwrap());
        assert!(!approx.record_one(v4(1)).unwrap());
        let six = Observation::untimed("2001:db8::1".parse().unwrap());
        assert!(approx.record_one(six).unwrap());
        assert_eq!(approx.counts(), Counts { ipv4: 1, ipv6: 1 });
    }

    #[test]
    fn the_key_decides_the_hash() {
        let clock = Arc::new(SystemClock);
        let a = ApproxState::new(14, None, clock.clone(), false);
        let b = ApproxState::new(14, None, clock, false);
        let ip = Observation::untimed("192.0.2.1".parse().unwrap());
        let coupon = |state: &ApproxState| state.sighting(&ip, 0).coupon;
        assert_eq!(coupon(&a), coupon(&a));
        assert_ne!(coupon(&a), coupon(&b), "two keys, two hashes");
    }

    const T: i64 = 1_800_000_000;

    fn windowed(clock: &Arc<ManualClock>) -> Approx {
        let settings = WindowSettings {
            windows: [("5m", 300), ("1h", 3600), ("24h", 86_400)]
                .map(|(label, secs)| (label.to_owned(), Duration::from_secs(secs)))
                .into(),
            max_clock_skew: Duration::from_secs(300),
        };
        Approx::new(14, Some(&settings), clock.clone(), false)
    }

    fn at(i: u32, time: i64) -> Observation {
        Observation {
            time: NonZeroU32::new(time as u32),
            ..v4(i)
        }
    }

    /// Each window's estimate is within three of its standard errors (1.625 % at lg_k 12).
    fn assert_windows(approx: &Approx, expected: [u64; 3]) {
        let counts: Vec<u64> = approx.windows().into_iter().map(|(_, n)| n).collect();
        for (got, want) in counts.iter().zip(expected) {
            let error = (*got as f64 - want as f64).abs();
            assert!(
                error <= 0.049 * want as f64,
                "{counts:?} against {expected:?}"
            );
        }
    }

    #[test]
    fn windows_count_each_address_at_its_time_and_let_it_age_out() {
        let clock = Arc::new(ManualClock::at(T));
        let approx = windowed(&clock);
        // 3,000 addresses each at 10 s, 1,000 s, 10,000 s and 100,000 s ago.
        for (n, ago) in [10, 1000, 10_000, 100_000].into_iter().enumerate() {
            let batch: Vec<Observation> = (0..3000)
                .map(|i| at(n as u32 * 3000 + i, T - ago))
                .collect();
            approx.record(&batch).unwrap();
        }
        assert_windows(&approx, [3000, 6000, 9000]);
        let total = approx.counts().total();
        assert!(total.abs_diff(12_000) < 12_000 * 3 / 100, "{total}");

        clock.set(T + 400);
        assert_windows(&approx, [0, 6000, 9000]);
        clock.set(T + 3000);
        assert_windows(&approx, [0, 3000, 9000]);
        clock.set(T + 86_400);
        assert_windows(&approx, [0, 0, 0]);
        assert_eq!(approx.counts().total(), total, "the total never ages");
    }

    #[test]
    fn a_repeat_at_a_newer_time_moves_into_the_windows_and_an_older_one_never_back() {
        let clock = Arc::new(ManualClock::at(T));
        let approx = windowed(&clock);
        let batch: Vec<Observation> = (0..2000).map(|i| at(i, T - 10_000)).collect();
        approx.record(&batch).unwrap();
        assert_windows(&approx, [0, 0, 2000]);
        let newer: Vec<Observation> = (0..1000).map(|i| at(i, T - 5)).collect();
        assert_eq!(approx.record(&newer).unwrap(), 0, "known addresses");
        assert_windows(&approx, [1000, 1000, 2000]);
        let older: Vec<Observation> = (0..2000).map(|i| at(i, T - 20_000)).collect();
        approx.record(&older).unwrap();
        assert_windows(&approx, [1000, 1000, 2000]);
    }

    #[test]
    fn an_entry_ahead_counts_when_its_time_comes_and_one_beyond_the_skew_at_arrival() {
        let clock = Arc::new(ManualClock::at(T));
        let approx = windowed(&clock);
        let ahead: Vec<Observation> = (0..1000).map(|i| at(i, T + 100)).collect();
        approx.record(&ahead).unwrap();
        // Counted once its step begins: a 24h window's steps are 24 minutes.
        assert_windows(&approx, [0, 0, 1000]);
        assert_eq!(approx.clock_skew_entries(), 0);
        clock.set(T + 100);
        assert_windows(&approx, [1000, 1000, 1000]);
        let beyond: Vec<Observation> = (1000..1500).map(|i| at(i, T + 100_000)).collect();
        approx.record(&beyond).unwrap();
        assert_eq!(approx.clock_skew_entries(), 500);
        assert_windows(&approx, [1500, 1500, 1500]);
    }

    #[test]
    fn window_memory_is_bounded_whatever_the_traffic() {
        let clock = Arc::new(ManualClock::at(T));
        let approx = windowed(&clock);
        // 400,000 addresses over the whole day, 5 a second over the last 15 hours: every step
        // of every ring holds some.
        let batch: Vec<Observation> = (0..400_000)
            .map(|i| at(i, T - i64::from(i) % 86_400))
            .collect();
        approx.record(&batch).unwrap();
        let bytes = approx.memory_bytes();
        assert!(bytes < 1 << 20, "{bytes} bytes");
        assert_windows(&approx, [5 * 300, 5 * 3600, 400_000]);
    }

    #[test]
    fn a_switched_state_never_reports_less_than_the_exact_counts_it_started_from() {
        let floor = Counts {
            ipv4: 1000,
            ipv6: 5,
        };
        let state = ApproxState::switched(14, None, Arc::new(SystemClock), false);
        let seen: Vec<(IpAddr, u32)> = (0..10).map(|i| (v4(i).ip, 0)).collect();
        state.seed(&seen);
        state.continue_from(floor, 3);
        assert_eq!(
            state.counts(),
            floor,
            "an estimate of 10 is below the floor"
        );
        let approx: Approx = Approx::of(Arc::new(state));
        assert_eq!(approx.clock_skew_entries(), 3, "the skew counter goes on");
        let more: Vec<Observation> = (0..2000).map(v4).collect();
        approx.record(&more).unwrap();
        let counts = approx.counts();
        assert!(counts.ipv4 > 1000 && counts.ipv6 == 5, "{counts:?}");
    }
}
