//! What the exact counter keeps in the data directory (README "Durability"), in two format
//! versions. Addresses are big-endian, as a hex dump shows them; times little-endian.
//!
//! - Version 1, without time windows: log records of 16 bytes, an IPv6 address with IPv4 as
//!   IPv4-mapped (`::ffff:a.b.c.d`); a snapshot of 4-byte IPv4 records, ascending, then 16-byte
//!   IPv6 records.
//! - Version 2, with windows: each record followed by its time, the start of its stamp's step
//!   in seconds since the Unix epoch as a `u32` (0: none, before the largest window): log
//!   records of 20 bytes, snapshot records of 8 and 20.
//!
//! Either version reads back with windows on or off: version 1 addresses have no time, and a
//! state without windows ignores the times.

use std::io::{self, Seek, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{AddressSet, Bits, Run, Sightings, StampedRun};
use crate::counter::clock::Clock;
use crate::counter::windows::{Order, Stamp, WindowSettings, Windows};
use crate::wal::Durable;
use crate::wal::format::{SnapshotWriter, Version, records};

/// The set, its windows when on, and their clock: what the exact kind's log keeps.
#[derive(Debug)]
pub struct ExactState {
    /// Every address.
    pub set: AddressSet,
    /// The windows over their stamps, when on.
    pub windows: Option<Windows>,
    /// Now, for stamps.
    pub clock: Arc<dyn Clock>,
}

impl ExactState {
    /// An empty state, with `windows` when set.
    pub fn new(windows: Option<&WindowSettings>, clock: Arc<dyn Clock>) -> ExactState {
        ExactState {
            set: AddressSet::new(windows.is_some()),
            windows: windows.map(|w| Windows::new(w, clock.now())),
            clock,
        }
    }

    /// Counts `seen` addresses, each with the time of its record (0: none).
    fn restore(&self, seen: impl ExactSizeIterator<Item = (IpAddr, u32)>) {
        match &self.windows {
            None => {
                self.set.insert_many(seen.map(|(ip, _)| ip));
            }
            Some(windows) => {
                let now = self.clock.now();
                let order = windows.order(now);
                let stamped = seen.map(|(ip, time)| (ip, windows.stamp_at(time, now)));
                let changes = self
                    .set
                    .observe_many(&Sightings::latest(stamped, order), order);
                windows.apply(&changes, now);
            }
        }
    }
}

/// The log record of `ip`: 16 bytes, IPv4 as IPv4-mapped IPv6.
pub fn log_record(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The version 2 log records of `sightings`, each address with the time of its stamp, IPv4
/// first.
pub fn timed_records(sightings: &Sightings, windows: &Windows, order: Order) -> Vec<u8> {
    let ipv4 = sightings
        .ipv4
        .iter()
        .map(|&(a, stamp)| (Ipv4Addr::from_bits(a).to_ipv6_mapped(), stamp));
    let ipv6 = sightings
        .ipv6
        .iter()
        .map(|&(a, stamp)| (Ipv6Addr::from_bits(a), stamp));
    let mut records = Vec::with_capacity(20 * (sightings.ipv4.len() + sightings.ipv6.len()));
    for (a, stamp) in ipv4.chain(ipv6) {
        records.extend_from_slice(&a.octets());
        records.extend_from_slice(&windows.time_of(stamp, order).to_le_bytes());
    }
    records
}

/// The log records of `bits`, IPv4 first.
pub fn log_records(bits: &Bits) -> Vec<u8> {
    let ipv4 = bits
        .ipv4
        .iter()
        .map(|&a| Ipv4Addr::from_bits(a).to_ipv6_mapped());
    let ipv6 = bits.ipv6.iter().map(|&a| Ipv6Addr::from_bits(a));
    ipv4.chain(ipv6).flat_map(|a| a.octets()).collect()
}

/// The address of a log record.
pub fn log_record_addr(record: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(record)).to_canonical()
}

fn time_at(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

impl Durable for ExactState {
    fn version(&self) -> Version {
        if self.windows.is_some() { 2 } else { 1 }
    }

    fn record_len(version: Version) -> Option<usize> {
        match version {
            1 => Some(16),
            2 => Some(20),
            _ => None,
        }
    }

    fn sections(version: Version) -> Option<[usize; 2]> {
        match version {
            1 => Some([4, 16]),
            2 => Some([8, 20]),
            _ => None,
        }
    }

    fn replay(&self, version: Version, bytes: &[u8]) {
        if version == 1 {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for record in records::<16>(bytes) {
                match log_record_addr(record) {
                    IpAddr::V4(a) => v4.push(a.to_bits()),
                    IpAddr::V6(a) => v6.push(a.to_bits()),
                }
            }
            self.set.insert_bits(&mut v4, &v6);
            return;
        }
        let seen: Vec<(IpAddr, u32)> = records::<20>(bytes)
            .map(|r| {
                let ip = log_record_addr(r[..16].try_into().expect("16 bytes"));
                (ip, time_at(&r[16..]))
            })
            .collect();
        self.restore(seen.into_iter());
    }

    fn load(&self, version: Version, section: usize, bytes: &[u8]) {
        match (version, section) {
            (1, 0) => {
                let mut v4: Vec<u32> = records::<4>(bytes).map(u32::from_be_bytes).collect();
                self.set.insert_bits(&mut v4, &[]);
            }
            (1, _) => {
                let v6: Vec<u128> = records::<16>(bytes).map(u128::from_be_bytes).collect();
                self.set.insert_bits(&mut [], &v6);
            }
            (_, 0) => {
                let seen: Vec<(IpAddr, u32)> = records::<8>(bytes)
                    .map(|r| {
                        let ip =
                            Ipv4Addr::from_bits(u32::from_be_bytes(r[..4].try_into().expect("4")));
                        (IpAddr::V4(ip), time_at(&r[4..]))
                    })
                    .collect();
                self.restore(seen.into_iter());
            }
            (_, _) => {
                let seen: Vec<(IpAddr, u32)> = records::<20>(bytes)
                    .map(|r| {
                        let bits = u128::from_be_bytes(r[..16].try_into().expect("16"));
                        (IpAddr::V6(Ipv6Addr::from_bits(bits)), time_at(&r[16..]))
                    })
                    .collect();
                self.restore(seen.into_iter());
            }
        }
    }

    fn snapshot<W: Write + Seek>(&self, out: &mut SnapshotWriter<W>) -> io::Result<()> {
        let Some(windows) = &self.windows else {
            return self.set.for_each_run(|run| match run {
                Run::Ipv4(run) => run.iter().try_for_each(|a| out.push(0, &a.to_be_bytes())),
                Run::Ipv6(run) => run.iter().try_for_each(|a| out.push(1, &a.to_be_bytes())),
            });
        };
        let order = windows.order(self.clock.now());
        let time = |stamp: Stamp| windows.time_of(stamp, order).to_le_bytes();
        self.set.for_each_stamped_run(|run| match run {
            StampedRun::Ipv4(run) => run.iter().try_for_each(|&(a, stamp)| {
                let mut record = [0; 8];
                record[..4].copy_from_slice(&a.to_be_bytes());
                record[4..].copy_from_slice(&time(stamp));
                out.push(0, &record)
            }),
            StampedRun::Ipv6(run) => run.iter().try_for_each(|&(a, stamp)| {
                let mut record = [0; 20];
                record[..16].copy_from_slice(&a.to_be_bytes());
                record[16..].copy_from_slice(&time(stamp));
                out.push(1, &record)
            }),
        })
    }

    fn describe(&self) -> String {
        let counts = self.set.counts();
        format!(
            "{} unique addresses ({} IPv4, {} IPv6)",
            counts.total(),
            counts.ipv4,
            counts.ipv6
        )
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;
    use crate::counter::clock::ManualClock;
    use crate::wal::format::read_snapshot;

    #[test]
    fn records_keep_both_families_and_map_ipv4() {
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        assert_eq!(
            log_record_addr(log_record(mapped)),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        for i in 0..30u32 {
            let ip = if i % 3 == 0 {
                IpAddr::V6(Ipv6Addr::from_bits(0x2001_0db8 << 96 | u128::from(i)))
            } else {
                IpAddr::V4(Ipv4Addr::from_bits(i.wrapping_mul(2_654_435_761)))
            };
            assert_eq!(log_record_addr(log_record(ip)), ip);
            let bits = Bits::split([ip].into_iter());
            assert_eq!(log_records(&bits), log_record(ip));
        }
    }

    fn settings() -> WindowSettings {
        WindowSettings {
            windows: vec![
                ("5m".into(), Duration::from_secs(300)),
                ("1h".into(), Duration::from_secs(3600)),
            ],
            max_clock_skew: Duration::from_secs(60),
        }
    }

    fn snapshot_of(state: &ExactState) -> Vec<u8> {
        let version = state.version();
        let sections = ExactState::sections(version).unwrap();
        let mut out =
            SnapshotWriter::new(io::Cursor::new(Vec::new()), 0, version, sections).unwrap();
        state.snapshot(&mut out).unwrap();
        out.finish().unwrap().0.into_inner()
    }

    fn read_into(file: &[u8], state: &ExactState) {
        read_snapshot(file, ExactState::sections, |v, s, r| state.load(v, s, r)).unwrap();
    }

    /// With windows, a snapshot and a log keep each address's time: read back, the windows
    /// count the same; without, a version 2 file reads as its addresses.
    #[test]
    fn snapshots_and_logs_keep_the_windows() {
        const NOW: i64 = 1_750_000_000;
        let clock = Arc::new(ManualClock::at(NOW));
        let state = ExactState::new(Some(&settings()), clock.clone());
        let windows = state.windows.as_ref().unwrap();
        let order = windows.order(NOW);
        let mut seen = Vec::new();
        for i in 0..3000u32 {
            let ip = if i % 4 == 0 {
                IpAddr::V6(Ipv6Addr::from_bits(0x2001_0db8 << 96 | u128::from(i) << 20))
            } else {
                IpAddr::V4(Ipv4Addr::from_bits(i.wrapping_mul(2_654_435_761)))
            };
            // Over two hours: some in 5m, more in 1h, the rest in the total only.
            let time = NonZeroU32::new((NOW - i64::from(i) * 2) as u32);
            seen.push((ip, windows.stamp(time, NOW)));
        }
        let seen = Sightings::latest(seen.into_iter(), order);
        let changes = state.set.observe_many(&seen, order);
        windows.apply(&changes, NOW);
        let counts = windows.counts(NOW);
        assert!(counts[0].1 > 0 && counts[1].1 > counts[0].1, "{counts:?}");

        let file = snapshot_of(&state);
        let read = ExactState::new(Some(&settings()), clock.clone());
        read_into(&file, &read);
        assert_eq!(read.set.counts(), state.set.counts());
        assert_eq!(read.windows.as_ref().unwrap().counts(NOW), counts);

        let log = timed_records(&seen, windows, order);
        let replayed = ExactState::new(Some(&settings()), clock.clone());
        replayed.replay(2, &log);
        assert_eq!(replayed.windows.as_ref().unwrap().counts(NOW), counts);

        let plain = ExactState::new(None, clock);
        read_into(&file, &plain);
        plain.replay(2, &log);
        assert_eq!(plain.set.counts(), state.set.counts());
    }

    /// A version 1 snapshot (no times) reads into a windowed state: every address, in no window.
    #[test]
    fn a_version_1_snapshot_reads_with_windows_on() {
        let clock = Arc::new(ManualClock::at(1_750_000_000));
        let plain = ExactState::new(None, clock.clone());
        let mut v4: Vec<u32> = (0..20_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let v6: Vec<u128> = (0..3_000u128).map(|i| 0x2001_0db8 << 96 | i << 9).collect();
        plain.set.insert_bits(&mut v4, &v6);
        let file = snapshot_of(&plain);
        let windowed = ExactState::new(Some(&settings()), clock);
        read_into(&file, &windowed);
        assert_eq!(windowed.set.counts(), plain.set.counts());
        let counts = windowed.windows.as_ref().unwrap().counts(1_750_000_000);
        assert!(counts.iter().all(|&(_, n)| n == 0), "{counts:?}");
    }
}
