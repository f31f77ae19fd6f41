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
//! Data directory, format version 3: log records of 16 bytes (the address, IPv4 as
//! IPv4-mapped IPv6); a snapshot of one 24-byte record (the key, `lg_k`, zeros), then the two
//! sketches as bytes (1-byte records: each sketch's length as a little-endian `u32`, then its
//! DataSketches serialization, IPv4 first).

use std::io::{self, Read, Seek, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use datasketches::hash::value::raw_bytes;
use datasketches::hll::{Coupon, HllSketch, HllType};
use parking_lot::Mutex;
use siphasher::sip::SipHasher13;

use super::exact::Family;
use super::log::Log;
use super::{Counts, Gauge, Observation};
use crate::wal::format::{SnapshotWriter, Version, records};
use crate::wal::{DataDir, Durable, RecoveryError, StorageError};

/// The format version of an approximate data directory.
pub const APPROX_VERSION: Version = 3;
const VERSION: Version = APPROX_VERSION;
/// Bytes of the snapshot's first section's one record: key, `lg_k`, reserved zeros.
const HEADER_RECORD: usize = 24;

/// What the log and snapshots keep: the key and both families' sketches.
#[derive(Debug)]
pub struct ApproxState {
    lg_k: u8,
    /// Set at construction without a data directory, else read back or drawn at recovery.
    key: OnceLock<[u8; 16]>,
    sketches: Mutex<Sketches>,
    /// The estimates of `live`, rounded, for lock-free reads.
    estimates: [AtomicU64; 2],
}

/// `live` is what is counted; `probe` runs ahead by what is about to be logged.
#[derive(Debug)]
struct Sketches {
    live: [HllSketch; 2],
    probe: Option<[HllSketch; 2]>,
    /// Snapshot bytes read back and not parsed yet (frames split them anywhere).
    loaded: Vec<u8>,
}

impl ApproxState {
    fn new(lg_k: u8, persistent: bool) -> ApproxState {
        let empty = || [sketch(lg_k), sketch(lg_k)];
        let state = ApproxState {
            lg_k,
            key: OnceLock::new(),
            sketches: Mutex::new(Sketches {
                live: empty(),
                probe: persistent.then(empty),
                loaded: Vec::new(),
            }),
            estimates: [AtomicU64::new(0), AtomicU64::new(0)],
        };
        if !persistent {
            let _ = state.key.set(random_key());
        }
        state
    }

    /// A state to read a directory into offline (`ip-counter verify`): its key and sketches
    /// come from the directory.
    pub fn reading() -> ApproxState {
        ApproxState::new(14, true)
    }

    /// Finishes reading a directory back: the snapshot's sketches parsed, the estimates set.
    pub fn read_back(&self) {
        let mut sketches = self.sketches.lock();
        self.parse_loaded(&mut sketches);
        self.publish(&sketches);
    }

    /// The coupon of `ip` under the directory's key, and its family (0 IPv4, 1 IPv6).
    fn coupon(&self, ip: IpAddr) -> (usize, Coupon) {
        let key = self
            .key
            .get()
            .expect("the key is set before records are taken");
        let mut hasher = SipHasher13::new_with_key(key);
        let family = match Family::of(ip) {
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
        (family, Coupon::from_value(raw_bytes::from_slice(&hash)))
    }

    fn publish(&self, sketches: &Sketches) {
        for (estimate, sketch) in self.estimates.iter().zip(&sketches.live) {
            estimate.store(sketch.estimate().round() as u64, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            ipv4: self.estimates[0].load(Ordering::Relaxed),
            ipv6: self.estimates[1].load(Ordering::Relaxed),
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
            if let Some(probe) = &mut sketches.probe {
                probe[family] = sketch.clone();
            }
            sketches.live[family] = sketch;
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
        VERSION
    }

    fn record_len(version: Version) -> Option<usize> {
        (version == VERSION).then_some(16)
    }

    fn sections(version: Version) -> Option<[usize; 2]> {
        (version == VERSION).then_some([HEADER_RECORD, 1])
    }

    fn replay(&self, _: Version, bytes: &[u8]) {
        let mut sketches = self.sketches.lock();
        self.parse_loaded(&mut sketches);
        for record in records::<16>(bytes) {
            let ip = super::exact::log_record_addr(record);
            let (family, coupon) = self.coupon(ip);
            sketches.live[family].update_with_coupon(coupon);
            if let Some(probe) = &mut sketches.probe {
                probe[family].update_with_coupon(coupon);
            }
        }
        self.publish(&sketches);
    }

    fn load(&self, _: Version, section: usize, bytes: &[u8]) {
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
        self.sketches.lock().loaded.extend_from_slice(bytes);
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
            sketches
                .live
                .iter()
                .flat_map(|s| {
                    let bytes = s.serialize();
                    (bytes.len() as u32).to_le_bytes().into_iter().chain(bytes)
                })
                .collect()
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

/// The approximate kind: its state and, once recovery has started it, its log.
#[derive(Debug)]
pub struct Approx {
    state: Arc<ApproxState>,
    wal: Log<ApproxState>,
}

impl Approx {
    /// Empty sketches of `2^lg_k` registers; `persistent` when a data directory will be read.
    pub(super) fn new(lg_k: u8, persistent: bool) -> Approx {
        Approx {
            state: Arc::new(ApproxState::new(lg_k, persistent)),
            wal: Log::new(),
        }
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

    /// Returns the growth of the estimate.
    pub(super) fn record(&self, observations: &[Observation]) -> Result<u64, StorageError> {
        let coupons: Vec<(IpAddr, usize, Coupon)> = observations
            .iter()
            .map(|o| {
                let (family, coupon) = self.state.coupon(o.ip);
                (o.ip, family, coupon)
            })
            .collect();
        let before = self.state.counts().total();
        self.take(&coupons)?;
        Ok(self.state.counts().total().saturating_sub(before))
    }

    /// Whether the sketch changed: the address was certainly new.
    pub(super) fn record_one(&self, observation: Observation) -> Result<bool, StorageError> {
        let (family, coupon) = self.state.coupon(observation.ip);
        Ok(self.take(&[(observation.ip, family, coupon)])? > 0)
    }

    /// Counts `coupons`; how many changed the sketch. With a log, those are found on the probe
    /// first and written before the counted sketch takes them.
    fn take(&self, coupons: &[(IpAddr, usize, Coupon)]) -> Result<u64, StorageError> {
        let Some(wal) = self.wal.get() else {
            let mut sketches = self.state.sketches.lock();
            let changed = coupons
                .iter()
                .filter(|&&(_, f, c)| update(&mut sketches.live[f], c))
                .count();
            self.state.publish(&sketches);
            return Ok(changed as u64);
        };
        let changing: Vec<(IpAddr, usize, Coupon)> = {
            let mut sketches = self.state.sketches.lock();
            let probe = sketches.probe.as_mut().expect("a logged state has a probe");
            coupons
                .iter()
                .copied()
                .filter(|&(_, f, c)| update(&mut probe[f], c))
                .collect()
        };
        if changing.is_empty() {
            return Ok(0);
        }
        let mut writer = wal.writer();
        let mut sketches = self.state.sketches.lock();
        let records: Vec<u8> = changing
            .iter()
            .flat_map(|&(ip, ..)| super::exact::log_record(ip))
            .collect();
        if let Err(e) = writer.append(&records) {
            // The probe is ahead by what was refused: back to what is counted.
            sketches.probe = Some(sketches.live.clone());
            return Err(e);
        }
        let changed = changing
            .iter()
            .filter(|&&(_, f, c)| update(&mut sketches.live[f], c))
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

    /// 1.04 / sqrt(2^lg_k).
    pub(super) fn relative_standard_error(&self) -> f64 {
        1.04 / f64::from(1u32 << self.state.lg_k).sqrt()
    }

    pub(super) fn memory_bytes(&self) -> usize {
        let sketches = self.state.sketches.lock();
        let size = |s: &[HllSketch; 2]| s.iter().map(HllSketch::estimated_size).sum::<usize>();
        size(&sketches.live) + sketches.probe.as_ref().map_or(0, size)
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

    use super::*;

    fn v4(i: u32) -> Observation {
        Observation::untimed(IpAddr::V4(Ipv4Addr::from_bits(
            i.wrapping_mul(2_654_435_761),
        )))
    }

    #[test]
    fn a_million_addresses_are_estimated_within_three_standard_errors() {
        let approx = Approx::new(14, false);
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
        let approx = Approx::new(12, false);
        assert!(approx.record_one(v4(1)).unwrap());
        assert!(!approx.record_one(v4(1)).unwrap());
        let six = Observation::untimed("2001:db8::1".parse().unwrap());
        assert!(approx.record_one(six).unwrap());
        assert_eq!(approx.counts(), Counts { ipv4: 1, ipv6: 1 });
    }

    #[test]
    fn the_key_decides_the_hash() {
        let a = ApproxState::new(14, false);
        let b = ApproxState::new(14, false);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(a.coupon(ip), a.coupon(ip));
        assert_ne!(a.coupon(ip), b.coupon(ip), "two keys, two hashes");
    }
}
