//! What the exact counter keeps in the data directory (format version 1, README "Durability"):
//! log records of 16 bytes, an IPv6 address in network order with IPv4 as IPv4-mapped
//! (`::ffff:a.b.c.d`); a snapshot of 4-byte IPv4 records, ascending, then 16-byte IPv6 records.
//! Addresses are big-endian, as a hex dump shows them.

use std::io::{self, Seek, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{AddressSet, Bits, Run};
use crate::wal::Durable;
use crate::wal::format::{SnapshotWriter, records};

/// The log record of `ip`: 16 bytes, IPv4 as IPv4-mapped IPv6.
pub fn log_record(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
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
fn log_record_addr(record: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(record)).to_canonical()
}

impl Durable for AddressSet {
    const RECORD_LEN: usize = 16;
    const SECTIONS: [usize; 2] = [4, 16];

    fn replay(&self, bytes: &[u8]) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for record in records::<16>(bytes) {
            match log_record_addr(record) {
                IpAddr::V4(a) => v4.push(a.to_bits()),
                IpAddr::V6(a) => v6.push(a.to_bits()),
            }
        }
        self.insert_bits(&mut v4, &v6);
    }

    fn load(&self, section: usize, bytes: &[u8]) {
        if section == 0 {
            let mut v4: Vec<u32> = records::<4>(bytes).map(u32::from_be_bytes).collect();
            self.insert_bits(&mut v4, &[]);
        } else {
            let v6: Vec<u128> = records::<16>(bytes).map(u128::from_be_bytes).collect();
            self.insert_bits(&mut [], &v6);
        }
    }

    fn snapshot<W: Write + Seek>(&self, out: &mut SnapshotWriter<W>) -> io::Result<()> {
        self.for_each_run(|run| match run {
            Run::Ipv4(run) => run.iter().try_for_each(|a| out.push(0, &a.to_be_bytes())),
            Run::Ipv6(run) => run.iter().try_for_each(|a| out.push(1, &a.to_be_bytes())),
        })
    }

    fn describe(&self) -> String {
        let counts = self.counts();
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
    use super::*;

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

    /// A snapshot and a log written from a set read back into an equal set.
    #[test]
    fn a_snapshot_and_a_log_read_back_the_same_addresses() {
        let set = AddressSet::default();
        let mut v4: Vec<u32> = (0..20_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let v6: Vec<u128> = (0..3_000u128).map(|i| 0x2001_0db8 << 96 | i << 9).collect();
        set.insert_bits(&mut v4, &v6);
        let mut out =
            SnapshotWriter::new(io::Cursor::new(Vec::new()), 0, AddressSet::SECTIONS).unwrap();
        set.snapshot(&mut out).unwrap();
        let file = out.finish().unwrap().0.into_inner();
        let read = AddressSet::default();
        crate::wal::format::read_snapshot(&file, AddressSet::SECTIONS, |s, r| read.load(s, r))
            .unwrap();
        assert_eq!(read.counts(), set.counts());

        let replayed = AddressSet::default();
        replayed.replay(&log_records(&Bits { ipv4: v4, ipv6: v6 }));
        assert_eq!(replayed.counts(), set.counts());
    }
}
