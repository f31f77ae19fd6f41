//! The snapshot file: a header counting the records of each of its two sections, then their
//! frames, section by section (see [`super`] for frames).

use std::io::{self, Seek, Write};

use super::{
    Damage, Frame, SNAPSHOT_FRAME_RECORDS, SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, Version,
    check_header, crc, damage, frame_at, push_frame, u64_at, unknown_version,
};

/// The number of sections in a snapshot.
pub const SECTIONS: usize = 2;

/// What a snapshot header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The first log generation the snapshot does not include.
    pub generation: u64,
    /// The format version of its records.
    pub version: Version,
    /// Records in each section, in file order.
    pub records: [u64; SECTIONS],
}

impl SnapshotHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SNAPSHOT_HEADER_LEN] {
        let mut header = [0u8; SNAPSHOT_HEADER_LEN];
        header[..7].copy_from_slice(SNAPSHOT_MAGIC);
        header[7] = self.version;
        header[8..16].copy_from_slice(&self.generation.to_le_bytes());
        header[16..24].copy_from_slice(&self.records[0].to_le_bytes());
        header[24..32].copy_from_slice(&self.records[1].to_le_bytes());
        let check = crc(&header[..32]);
        header[32..36].copy_from_slice(&check.to_le_bytes());
        header
    }
}

/// Writes a snapshot to `out`: a placeholder header, the records of each section in turn in
/// frames of [`SNAPSHOT_FRAME_RECORDS`], and at [`SnapshotWriter::finish`] the header with the
/// counts written.
pub struct SnapshotWriter<W: Write + Seek> {
    out: W,
    header: SnapshotHeader,
    /// Bytes of a record of each section.
    record_lens: [usize; SECTIONS],
    /// The section being written.
    section: usize,
    /// Records not yet framed.
    pending: Vec<u8>,
    frame: Vec<u8>,
}

impl<W: Write + Seek> SnapshotWriter<W> {
    /// Starts snapshot `generation` (the first log generation it does not include) in format
    /// `version`, whose sections hold records of `record_lens` bytes.
    pub fn new(
        mut out: W,
        generation: u64,
        version: Version,
        record_lens: [usize; SECTIONS],
    ) -> io::Result<Self> {
        out.write_all(&[0; SNAPSHOT_HEADER_LEN])?;
        Ok(SnapshotWriter {
            out,
            header: SnapshotHeader {
                generation,
                version,
                records: [0; SECTIONS],
            },
            record_lens,
            section: 0,
            pending: Vec::new(),
            frame: Vec::new(),
        })
    }

    /// The format version it writes.
    pub fn version(&self) -> Version {
        self.header.version
    }

    /// Adds one record to `section`, which is never before the section of the record added
    /// before it.
    pub fn push(&mut self, section: usize, record: &[u8]) -> io::Result<()> {
        debug_assert!(section >= self.section, "sections are written in order");
        debug_assert_eq!(record.len(), self.record_lens[section]);
        if section != self.section {
            self.flush()?;
            self.section = section;
        }
        self.header.records[section] += 1;
        self.pending.extend_from_slice(record);
        if self.pending.len() == SNAPSHOT_FRAME_RECORDS * record.len() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.frame.clear();
        push_frame(
            &mut self.frame,
            self.record_lens[self.section],
            &self.pending,
        );
        self.pending.clear();
        self.out.write_all(&self.frame)
    }

    /// Writes the last frame and the header; returns the output and what the header says.
    pub fn finish(mut self) -> io::Result<(W, SnapshotHeader)> {
        self.flush()?;
        self.out.rewind()?;
        self.out.write_all(&self.header.encode())?;
        Ok((self.out, self.header))
    }
}

/// Checks a snapshot's header and returns what it says.
pub fn read_snapshot_header(file: &[u8]) -> Result<SnapshotHeader, Damage> {
    let header = file
        .get(..SNAPSHOT_HEADER_LEN)
        .ok_or_else(|| damage(0, "shorter than a snapshot header"))?;
    let version = check_header(header, SNAPSHOT_MAGIC, "snapshot", 32)?;
    Ok(SnapshotHeader {
        generation: u64_at(header, 8),
        version,
        records: [u64_at(header, 16), u64_at(header, 24)],
    })
}

/// Reads a whole snapshot, whose sections hold records of the lengths `sections` gives for its
/// version (none: a version the reader does not know), calling `each` with the version and
/// every frame's section and records. Any damage, a missing or extra byte included, is an
/// error: a snapshot is complete before it is renamed into place.
pub fn read_snapshot(
    file: &[u8],
    sections: impl Fn(Version) -> Option<[usize; SECTIONS]>,
    mut each: impl FnMut(Version, usize, &[u8]),
) -> Result<SnapshotHeader, Damage> {
    let head = read_snapshot_header(file)?;
    let record_lens = sections(head.version).ok_or_else(|| unknown_version(head.version))?;
    let mut at = SNAPSHOT_HEADER_LEN;
    for (section, &record_len) in record_lens.iter().enumerate() {
        let mut left = head.records[section];
        while left > 0 {
            let (payload, next) = match frame_at(file, at, record_len)? {
                Frame::Whole { payload, next } => (payload, next),
                Frame::Torn(what) => return Err(damage(at, what)),
            };
            left = left
                .checked_sub((payload.len() / record_len) as u64)
                .ok_or_else(|| {
                    damage(
                        at,
                        format!("more section {section} records than the header counts"),
                    )
                })?;
            each(head.version, section, payload);
            at = next;
        }
    }
    if at != file.len() {
        return Err(damage(at, "bytes after the last record the header counts"));
    }
    Ok(head)
}

/// What could be read of a damaged file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// Records read from whole frames.
    pub records: u64,
    /// Where reading stopped, when before the file's end, and why.
    pub stopped: Option<Damage>,
}

/// Reads the whole frames of a damaged snapshot from the first on, up to the first that does
/// not read (frames of each section in turn, whatever the header counts), for `ip-counter
/// repair`; calls `each` as [`read_snapshot`] does. The version is the header's when it reads,
/// else `fallback`.
pub fn salvage_snapshot(
    file: &[u8],
    sections: impl Fn(Version) -> Option<[usize; SECTIONS]>,
    fallback: Version,
    mut each: impl FnMut(Version, usize, &[u8]),
) -> Salvaged {
    let version = read_snapshot_header(file).map_or(fallback, |h| h.version);
    let Some(record_lens) = sections(version) else {
        return Salvaged {
            records: 0,
            stopped: Some(unknown_version(version)),
        };
    };
    let mut at = SNAPSHOT_HEADER_LEN.min(file.len());
    let mut records = 0;
    let mut section = 0;
    while at < file.len() {
        let whole = (section..SECTIONS).find_map(|s| match frame_at(file, at, record_lens[s]) {
            Ok(Frame::Whole { payload, next }) => Some((s, payload, next)),
            _ => None,
        });
        let Some((s, payload, next)) = whole else {
            return Salvaged {
                records,
                stopped: Some(damage(at, "no readable frame from here on")),
            };
        };
        section = s;
        each(version, section, payload);
        records += (payload.len() / record_lens[section]) as u64;
        at = next;
    }
    Salvaged {
        records,
        stopped: None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn snapshot(v4: &[u32], v6: &[u128]) -> Vec<u8> {
        let mut snapshot = SnapshotWriter::new(io::Cursor::new(Vec::new()), 3, 1, [4, 16]).unwrap();
        for a in v4 {
            snapshot.push(0, &a.to_be_bytes()).unwrap();
        }
        for a in v6 {
            snapshot.push(1, &a.to_be_bytes()).unwrap();
        }
        snapshot.finish().unwrap().0.into_inner()
    }

    fn read_back(file: &[u8]) -> Result<(SnapshotHeader, Vec<u32>, Vec<u128>), Damage> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let head = read_snapshot(
            file,
            |_| Some([4, 16]),
            |_, section, records| match section {
                0 => v4.extend(
                    records
                        .chunks_exact(4)
                        .map(|r| u32::from_be_bytes(r.try_into().unwrap())),
                ),
                _ => v6.extend(
                    records
                        .chunks_exact(16)
                        .map(|r| u128::from_be_bytes(r.try_into().unwrap())),
                ),
            },
        )?;
        Ok((head, v4, v6))
    }

    #[test]
    fn a_snapshot_reads_back_and_refuses_any_damage() {
        let v4: Vec<u32> = (0..40_000).map(|i| i * 7).collect();
        let v6: Vec<u128> = (0..20_000).map(|i| u128::MAX - i).collect();
        let file = snapshot(&v4, &v6);
        let (head, r4, r6) = read_back(&file).unwrap();
        assert_eq!((head.generation, r4, r6), (3, v4.clone(), v6.clone()));
        assert_eq!(read_back(&snapshot(&[], &[])).unwrap().1, Vec::<u32>::new());

        for at in (0..file.len()).step_by(997).chain([file.len() - 1]) {
            let mut bad = file.clone();
            bad[at] ^= 0x10;
            assert!(read_back(&bad).is_err(), "flip at {at}");
        }
        for cut in [0, 39, 40, 41, 1000, file.len() - 1] {
            assert!(read_back(&file[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(read_back(&longer).is_err());
    }

    proptest! {
        /// Whatever the bytes after a header, reading never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut file = SnapshotHeader { generation: 1, version: 1, records: [3, 2] }.encode().to_vec();
            file.extend_from_slice(&bytes);
            let _ = read_back(&file);
        }
    }
}
