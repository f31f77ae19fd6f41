//! The bytes of the data directory's files, version 1: log segments and the snapshot.
//!
//! Both are a header followed by frames. A frame is a run of fixed-size records with its own
//! checksums:
//!
//! ```text
//! frame   := count: u32 LE | payload_crc: u32 LE | header_crc: u32 LE | count × record
//! payload_crc = CRC-32 (IEEE) of the records; header_crc = CRC-32 of the frame's first 8 bytes
//! ```
//!
//! What a record holds is the counter kind's ([`super::Durable`]): this module knows only
//! their length. One segment frame is one write. A snapshot is two sections of records, each
//! with its own record length, counted in the header. Integers here are little-endian.
//!
//! The header checksum is what lets a reader tell a torn tail from damage: a frame cut short by
//! a crash has an intact header whose count reaches past the end of the file, while a damaged
//! count fails the header check. [`read_frames`] stops at a torn tail and reports damage
//! anywhere else, with its offset.

/// A file header's version byte: what its records hold is the counter kind's to say
/// ([`super::Durable`]), and a reader refuses a version its kind does not read.
pub type Version = u8;

const LOG_MAGIC: &[u8; 7] = b"IPCLOG\0";
const SNAPSHOT_MAGIC: &[u8; 7] = b"IPCSNAP";

/// Log header: magic (7) | version (1) | generation: u64 LE | CRC-32 of the first 16 bytes.
pub const LOG_HEADER_LEN: usize = 20;

/// Snapshot header: magic (7) | version (1) | generation: u64 LE | records of section 0: u64 LE |
/// records of section 1: u64 LE | CRC-32 of the first 32 bytes | 4 zero bytes.
pub const SNAPSHOT_HEADER_LEN: usize = 40;

/// Bytes before a frame's records.
pub const FRAME_HEADER_LEN: usize = 12;

/// Most records in one frame: larger writes are split. A count above it is damage.
pub const MAX_FRAME_RECORDS: usize = 1 << 20;

/// Records in a snapshot frame.
pub const SNAPSHOT_FRAME_RECORDS: usize = 16 * 1024;

/// Damage found at a byte offset of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the damaged header or frame starts.
    pub offset: u64,
    /// What is wrong there.
    pub what: String,
}

fn damage(offset: usize, what: impl Into<String>) -> Damage {
    Damage {
        offset: offset as u64,
        what: what.into(),
    }
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The records of a frame's payload, `N` bytes each.
pub fn records<const N: usize>(payload: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    payload
        .chunks_exact(N)
        .map(|r| r.try_into().expect("N bytes"))
}

/// Appends one frame holding `payload` (a whole number of records of `record_len` bytes).
pub fn push_frame(out: &mut Vec<u8>, record_len: usize, payload: &[u8]) {
    debug_assert_eq!(payload.len() % record_len, 0);
    let count = payload.len() / record_len;
    debug_assert!(count > 0 && count <= MAX_FRAME_RECORDS);
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[..4].copy_from_slice(&(count as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc(payload).to_le_bytes());
    let check = crc(&header[..8]);
    header[8..].copy_from_slice(&check.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// Where reading frames stopped, when no damage was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// Offset just past the last whole frame: the file's good length.
    pub good_len: u64,
    /// Bytes after it that belong to a frame cut short (a torn tail), or zeros; 0 when the
    /// file ends cleanly.
    pub torn_bytes: u64,
    /// Whether those bytes are all zeros: space the writer allocated ahead, or pages a crash
    /// left unwritten, rather than a write cut short.
    pub zeros: bool,
    /// Whole frames read.
    pub frames: u64,
}

/// The frame at an offset.
enum Frame<'a> {
    /// Complete and intact: its records, and where the next frame starts.
    Whole { payload: &'a [u8], next: usize },
    /// Cut short by the end of the file, or zeros to the end: what a crash leaves.
    Torn(&'static str),
}

/// Writes reach the disk, and a killed write stops, at page boundaries, which are multiples of
/// this: a write cut short leaves its own bytes up to such a boundary and zeros after it.
const SECTOR: usize = 512;

/// Whether the frame at `at`, which fails its checks, is a write that a crash cut short rather
/// than damage: `end` is where the checked part ends (its header, or its records), and the file
/// holds only zeros from a sector boundary before `end` to its end, as a write stopped between
/// pages leaves it (the writer keeps zeros ahead of the log's end, so nothing else follows).
fn cut_short(file: &[u8], at: usize, end: usize) -> bool {
    let zeros_from = file.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    zeros_from <= at || zeros_from.next_multiple_of(SECTOR) < end
}

fn frame_at(file: &[u8], at: usize, record_len: usize) -> Result<Frame<'_>, Damage> {
    let rest = &file[at..];
    if rest.len() < FRAME_HEADER_LEN {
        return Ok(Frame::Torn("the file ends inside a frame header"));
    }
    if crc(&rest[..8]) != u32_at(rest, 8) {
        if cut_short(file, at, at + FRAME_HEADER_LEN) {
            return Ok(Frame::Torn("a frame header cut short, zeros after it"));
        }
        return Err(damage(at, "frame header checksum mismatch"));
    }
    let count = u32_at(rest, 0) as usize;
    if count == 0 || count > MAX_FRAME_RECORDS {
        return Err(damage(at, format!("impossible record count {count}")));
    }
    let len = FRAME_HEADER_LEN + count * record_len;
    if rest.len() < len {
        return Ok(Frame::Torn("the file ends inside a frame"));
    }
    let payload = &rest[FRAME_HEADER_LEN..len];
    if crc(payload) != u32_at(rest, 4) {
        if cut_short(file, at, at + len) {
            return Ok(Frame::Torn("a frame cut short, zeros after it"));
        }
        return Err(damage(at, "frame records checksum mismatch"));
    }
    Ok(Frame::Whole {
        payload,
        next: at + len,
    })
}

/// Reads the frames of a log from `start` to the file's end, calling `each` with every frame's
/// records. A frame cut short by the end of the file, or zero bytes to the end, is the torn
/// tail a crash leaves and ends the reading; a failed checksum or an impossible count is damage
/// wherever it is.
pub fn read_frames(
    file: &[u8],
    start: usize,
    record_len: usize,
    mut each: impl FnMut(&[u8]),
) -> Result<End, Damage> {
    let mut at = start;
    let mut frames = 0;
    while at < file.len() {
        match frame_at(file, at, record_len)? {
            Frame::Whole { payload, next } => {
                each(payload);
                frames += 1;
                at = next;
            }
            Frame::Torn(_) => {
                return Ok(End {
                    good_len: at as u64,
                    torn_bytes: (file.len() - at) as u64,
                    frames,
                    zeros: file[at..].iter().all(|&b| b == 0),
                });
            }
        }
    }
    Ok(End {
        good_len: at as u64,
        torn_bytes: 0,
        frames,
        zeros: false,
    })
}

/// The header of log file `generation`, in format `version`.
pub fn log_header(generation: u64, version: Version) -> [u8; LOG_HEADER_LEN] {
    let mut header = [0u8; LOG_HEADER_LEN];
    header[..7].copy_from_slice(LOG_MAGIC);
    header[7] = version;
    header[8..16].copy_from_slice(&generation.to_le_bytes());
    let check = crc(&header[..16]);
    header[16..].copy_from_slice(&check.to_le_bytes());
    header
}

/// Checks a log file's header; returns its generation and format version.
pub fn read_log_header(file: &[u8]) -> Result<(u64, Version), Damage> {
    let header = file
        .get(..LOG_HEADER_LEN)
        .ok_or_else(|| damage(0, "shorter than a log header"))?;
    let version = check_header(header, LOG_MAGIC, "log", 16)?;
    Ok((u64_at(header, 8), version))
}

/// Checks magic and the header's own checksum, stored at `crc_at` over the bytes before it;
/// returns the version byte.
fn check_header(
    header: &[u8],
    magic: &[u8; 7],
    kind: &str,
    crc_at: usize,
) -> Result<Version, Damage> {
    if &header[..7] != magic {
        return Err(damage(0, format!("not an ip-counter {kind} file")));
    }
    if crc(&header[..crc_at]) != u32_at(header, crc_at) {
        return Err(damage(0, "header checksum mismatch"));
    }
    Ok(header[7])
}

/// The damage a file of a format version its reader does not know is.
pub fn unknown_version(version: Version) -> Damage {
    damage(
        7,
        format!(
            "format version {version}, which this COUNT_MODE does not read (1 and 2 are \
             COUNT_MODE=exact, 3 and 4 are COUNT_MODE=approx): start it with the mode that wrote it"
        ),
    )
}

mod snapshot;

pub use snapshot::{
    SECTIONS, Salvaged, SnapshotHeader, SnapshotWriter, read_snapshot, read_snapshot_header,
    salvage_snapshot,
};

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Records of 16 bytes, as the exact counter's are: the format knows only their length.
    const LOG_RECORD_LEN: usize = 16;

    fn log_with(frames: &[&[u128]]) -> Vec<u8> {
        log_of(&frames.iter().map(|f| f.to_vec()).collect::<Vec<_>>()).0
    }

    fn read_log(file: &[u8]) -> Result<(Vec<u128>, End), Damage> {
        assert_eq!(read_log_header(file)?, (7, 1));
        let mut records = Vec::new();
        let end = read_frames(file, LOG_HEADER_LEN, LOG_RECORD_LEN, |payload| {
            records.extend(
                payload
                    .chunks_exact(LOG_RECORD_LEN)
                    .map(|r| u128::from_be_bytes(r.try_into().unwrap())),
            );
        })?;
        Ok((records, end))
    }

    fn ips(n: u32) -> Vec<u128> {
        (0..n)
            .map(|i| 0x2001_0db8 << 96 | u128::from(i.wrapping_mul(2_654_435_761)))
            .collect()
    }

    #[test]
    fn a_log_reads_back_its_frames() {
        let all = ips(10);
        let file = log_with(&[&all[..1], &all[1..7], &all[7..]]);
        let (read, end) = read_log(&file).unwrap();
        assert_eq!(read, all);
        assert_eq!(
            end,
            End {
                good_len: file.len() as u64,
                torn_bytes: 0,
                frames: 3,
                zeros: false,
            }
        );
    }

    /// Every cut inside the last frame keeps the frames before it and reports the rest torn.
    #[test]
    fn a_torn_tail_is_dropped_at_every_offset() {
        let all = ips(9);
        let file = log_with(&[&all[..4], &all[4..]]);
        let last = LOG_HEADER_LEN + FRAME_HEADER_LEN + 4 * LOG_RECORD_LEN;
        for cut in last..file.len() {
            let (read, end) = read_log(&file[..cut]).unwrap();
            assert_eq!(read, all[..4], "cut at {cut}");
            assert_eq!(end.good_len, last as u64);
            assert_eq!(end.torn_bytes, (cut - last) as u64);
        }
        let mut zeroed = file[..last].to_vec();
        zeroed.extend([0u8; 100]);
        let end = read_log(&zeroed).unwrap().1;
        assert_eq!((end.torn_bytes, end.zeros), (100, true));
        assert!(!read_log(&file[..file.len() - 1]).unwrap().1.zeros);
    }

    /// The last frame written only up to a sector boundary, the zeros written ahead of the log's
    /// end still after it, is what a kill during the write leaves: a torn tail, wherever the
    /// boundary falls (inside the frame's header too), while a flipped byte in that frame, or a
    /// frame cut short followed by more data, is damage.
    #[test]
    fn a_frame_written_up_to_a_sector_inside_the_zeros_ahead_is_torn() {
        let all = ips(129);
        // The last frame's header spans the first sector boundary (508..520).
        let file = log_with(&[&all[..10], &all[10..29], &all[29..]]);
        let last = 508;
        let ahead = |mut bytes: Vec<u8>| {
            bytes.resize(file.len() + 64 * 1024, 0);
            bytes
        };
        for cut in (SECTOR..file.len()).step_by(SECTOR).chain([last]) {
            let torn = ahead(file[..cut].to_vec());
            let (read, end) = read_log(&torn).unwrap_or_else(|e| panic!("cut at {cut}: {e:?}"));
            assert_eq!(read, all[..29], "cut at {cut}");
            assert_eq!(end.good_len, last as u64, "cut at {cut}");
        }
        let (read, _) = read_log(&ahead(file.clone())).unwrap();
        assert_eq!(read, all);

        for at in [last + 3, last + 100, 1500, file.len() - 1] {
            let mut flipped = ahead(file.clone());
            flipped[at] ^= 0x08;
            let err = read_log(&flipped).expect_err(&format!("flip at {at}"));
            assert_eq!(err.offset, last as u64);
        }
        let mut followed = ahead(file[..1024].to_vec());
        followed[4000] = 1;
        assert_eq!(read_log(&followed).unwrap_err().offset, last as u64);
    }

    /// A flipped byte anywhere before the last frame is damage at that frame, never a tail.
    #[test]
    fn a_flipped_byte_is_damage_with_its_frame_offset() {
        let all = ips(9);
        let file = log_with(&[&all[..4], &all[4..6], &all[6..]]);
        let second = LOG_HEADER_LEN + FRAME_HEADER_LEN + 4 * LOG_RECORD_LEN;
        for at in LOG_HEADER_LEN..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x40;
            let frame = if at < second {
                LOG_HEADER_LEN
            } else if at < second + FRAME_HEADER_LEN + 2 * LOG_RECORD_LEN {
                second
            } else {
                second + FRAME_HEADER_LEN + 2 * LOG_RECORD_LEN
            };
            let err = read_log(&bad).expect_err(&format!("flip at {at}"));
            assert_eq!(err.offset, frame as u64, "flip at {at}: {err:?}");
        }
        for at in 0..LOG_HEADER_LEN {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            assert!(read_log_header(&bad).is_err(), "header flip at {at}");
        }
    }

    fn log_of(frames: &[Vec<u128>]) -> (Vec<u8>, Vec<usize>) {
        let mut file = log_header(7, 1).to_vec();
        let mut ends = Vec::new();
        for frame in frames {
            let payload: Vec<u8> = frame.iter().flat_map(|a| a.to_be_bytes()).collect();
            push_frame(&mut file, LOG_RECORD_LEN, &payload);
            ends.push(file.len());
        }
        (file, ends)
    }

    fn frames() -> impl Strategy<Value = Vec<Vec<u128>>> {
        let record = prop_oneof![Just(0u128), Just(u128::MAX), any::<u128>()];
        proptest::collection::vec(proptest::collection::vec(record, 1..12), 1..8)
    }

    proptest! {
        /// A log cut anywhere reads back exactly the frames wholly before the cut.
        #[test]
        fn any_cut_reads_back_the_whole_frames_before_it(
            frames in frames(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let (file, ends) = log_of(&frames);
            let cut = LOG_HEADER_LEN + cut.index(file.len() - LOG_HEADER_LEN + 1);
            let (read, end) = read_log(&file[..cut]).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            let expected: Vec<u128> = frames[..whole].iter().flatten().copied().collect();
            prop_assert_eq!(read, expected);
            let good = if whole == 0 { LOG_HEADER_LEN } else { ends[whole - 1] };
            prop_assert_eq!(end.good_len, good as u64);
            prop_assert_eq!(end.torn_bytes, (cut - good) as u64);
        }

        /// Any flipped bit after the header is reported as damage, never read as other records,
        /// unless it leaves the last frame looking exactly like a write cut short (zeros from a
        /// sector boundary inside it to the end), which only zero records can do.
        #[test]
        fn any_flipped_bit_is_damage(
            frames in frames(),
            at in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let (mut file, ends) = log_of(&frames);
            let at = LOG_HEADER_LEN + at.index(file.len() - LOG_HEADER_LEN);
            file[at] ^= 1 << bit;
            let last = ends.len().checked_sub(2).map_or(LOG_HEADER_LEN, |i| ends[i]);
            let looks_cut = at >= last && cut_short(&file, last, file.len());
            prop_assert!(read_log(&file).is_err() || looks_cut);
        }

        /// Whatever the bytes, reading never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut file = log_header(7, 1).to_vec();
            file.extend_from_slice(&bytes);
            let _ = read_log(&file);
        }
    }
}
