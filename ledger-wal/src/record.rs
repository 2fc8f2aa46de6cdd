//! The on-disk layout of segment headers and records (see `docs/wal-format.md`).
//!
//! Every integer is fixed-width little-endian; every offset is the previous offset plus that
//! field's size, asserted in `const` items below.

use crate::Lsn;

/// The magic bytes that open every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PLWALSEG";
/// The format version written into segment headers (bumped on any format change).
pub const FORMAT_VERSION: u8 = 1;

/// Size of the segment header.
pub const SEGMENT_HEADER_SIZE: usize = 32;
const SEGMENT_MAGIC_OFFSET: usize = 0;
const SEGMENT_CRC_OFFSET: usize = SEGMENT_MAGIC_OFFSET + 8;
const SEGMENT_VERSION_OFFSET: usize = SEGMENT_CRC_OFFSET + 4;
const SEGMENT_PADDING_OFFSET: usize = SEGMENT_VERSION_OFFSET + 1;
const SEGMENT_FIRST_LSN_OFFSET: usize = SEGMENT_PADDING_OFFSET + 3;
const SEGMENT_PREVIOUS_CRC_OFFSET: usize = SEGMENT_FIRST_LSN_OFFSET + 8;
const SEGMENT_RESERVED_OFFSET: usize = SEGMENT_PREVIOUS_CRC_OFFSET + 4;
const _: () = assert!(SEGMENT_RESERVED_OFFSET + 4 == SEGMENT_HEADER_SIZE);

/// Size of a record header.
pub const RECORD_HEADER_SIZE: usize = 32;
const RECORD_SIZE_OFFSET: usize = 0;
const RECORD_CRC_OFFSET: usize = RECORD_SIZE_OFFSET + 4;
const RECORD_KIND_OFFSET: usize = RECORD_CRC_OFFSET + 4;
const RECORD_PADDING_OFFSET: usize = RECORD_KIND_OFFSET + 1;
const RECORD_PREVIOUS_CRC_OFFSET: usize = RECORD_PADDING_OFFSET + 3;
const RECORD_LSN_OFFSET: usize = RECORD_PREVIOUS_CRC_OFFSET + 4;
const RECORD_SYNCED_LSN_OFFSET: usize = RECORD_LSN_OFFSET + 8;
const _: () = assert!(RECORD_SYNCED_LSN_OFFSET + 8 == RECORD_HEADER_SIZE);
/// Records start at multiples of this, so a scan past damage can step by it.
pub const RECORD_ALIGNMENT: usize = 8;
const _: () = assert!(RECORD_HEADER_SIZE % RECORD_ALIGNMENT == 0);
const _: () = assert!(SEGMENT_HEADER_SIZE % RECORD_ALIGNMENT == 0);

/// One record recovered from (or appended to) the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its log sequence number: 1 for the first record ever, then +1 per record.
    pub lsn: Lsn,
    /// The caller's record kind.
    pub kind: u8,
    /// The caller's bytes.
    pub payload: Vec<u8>,
}

/// The bytes a record with `payload_size` payload bytes occupies, padding included.
pub fn record_size(payload_size: usize) -> usize {
    (RECORD_HEADER_SIZE + payload_size).next_multiple_of(RECORD_ALIGNMENT)
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// Appends a record skeleton to `buffer`: size, kind, lsn and payload are final; the crc, the
/// chain and the synced lsn are filled in by `seal_record` when the record is written.
pub fn push_record(buffer: &mut Vec<u8>, kind: u8, lsn: Lsn, payload: &[u8]) {
    let start = buffer.len();
    assert!(start % RECORD_ALIGNMENT == 0);
    let payload_size = u32::try_from(payload.len()).expect("payload size checked by the caller");
    let mut header = [0u8; RECORD_HEADER_SIZE];
    header[RECORD_SIZE_OFFSET..RECORD_SIZE_OFFSET + 4].copy_from_slice(&payload_size.to_le_bytes());
    header[RECORD_KIND_OFFSET] = kind;
    header[RECORD_LSN_OFFSET..RECORD_LSN_OFFSET + 8].copy_from_slice(&lsn.to_le_bytes());
    buffer.extend_from_slice(&header);
    buffer.extend_from_slice(payload);
    buffer.resize(start + record_size(payload.len()), 0);
}

/// The total size of the record at the start of `bytes`, read from its size field (trusted:
/// only called on buffers this process built).
pub fn buffered_record_size(bytes: &[u8]) -> usize {
    record_size(read_u32(bytes, RECORD_SIZE_OFFSET) as usize)
}

/// The lsn of the record at the start of `bytes` (a buffer this process built).
pub fn buffered_record_lsn(bytes: &[u8]) -> Lsn {
    read_u64(bytes, RECORD_LSN_OFFSET)
}

/// The crc of one whole record: its size field, then everything after the crc field (padding
/// included), so no bit of the record is unprotected.
fn record_crc(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[RECORD_SIZE_OFFSET..RECORD_SIZE_OFFSET + 4]);
    hasher.update(&record[RECORD_KIND_OFFSET..]);
    hasher.finalize()
}

/// Fills in the chain and synced lsn of `record` (exactly one record, padding included) and
/// computes its crc (`record_crc`); returns the crc
/// (the next record's chain value).
pub fn seal_record(record: &mut [u8], previous_crc: u32, synced_lsn: Lsn) -> u32 {
    assert_eq!(record.len(), buffered_record_size(record));
    let offset = RECORD_PREVIOUS_CRC_OFFSET;
    record[offset..offset + 4].copy_from_slice(&previous_crc.to_le_bytes());
    let offset = RECORD_SYNCED_LSN_OFFSET;
    record[offset..offset + 8].copy_from_slice(&synced_lsn.to_le_bytes());
    let crc = record_crc(record);
    record[RECORD_CRC_OFFSET..RECORD_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    crc
}

/// A record header that passed its checks, as found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    /// The record's crc (the next record's chain value).
    pub crc: u32,
    /// The chain value: the previous record's crc.
    pub previous_crc: u32,
    /// The record's kind.
    pub kind: u8,
    /// The record's lsn.
    pub lsn: Lsn,
    /// Every record up to this lsn was durable when this record was written.
    pub synced_lsn: Lsn,
    /// Payload size in bytes.
    pub payload_size: usize,
    /// Total size on disk, padding included.
    pub record_size: usize,
}

/// Decodes and checks the record at `offset` of `segment`: the size must fit in the segment
/// and under `payload_size_max`, and the crc must match. The lsn and chain are the caller's to
/// check. Never panics and never allocates, whatever the bytes.
pub fn decode_record(segment: &[u8], offset: usize, payload_size_max: u32) -> Option<RecordView> {
    let header = segment.get(offset..offset.checked_add(RECORD_HEADER_SIZE)?)?;
    let payload_size = read_u32(header, RECORD_SIZE_OFFSET);
    if payload_size > payload_size_max {
        return None;
    }
    let payload_size = payload_size as usize;
    let record_size = record_size(payload_size);
    let record = segment.get(offset..offset.checked_add(record_size)?)?;
    let crc = read_u32(header, RECORD_CRC_OFFSET);
    if record_crc(record) != crc {
        return None;
    }
    Some(RecordView {
        crc,
        previous_crc: read_u32(header, RECORD_PREVIOUS_CRC_OFFSET),
        kind: header[RECORD_KIND_OFFSET],
        lsn: read_u64(header, RECORD_LSN_OFFSET),
        synced_lsn: read_u64(header, RECORD_SYNCED_LSN_OFFSET),
        payload_size,
        record_size,
    })
}

/// The lsn and synced lsn of a would-be record header at `offset`, unchecked: a cheap filter
/// before `decode_record` when scanning damaged bytes.
pub fn peek_record_lsns(segment: &[u8], offset: usize) -> Option<(Lsn, Lsn)> {
    let header = segment.get(offset..offset.checked_add(RECORD_HEADER_SIZE)?)?;
    Some((
        read_u64(header, RECORD_LSN_OFFSET),
        read_u64(header, RECORD_SYNCED_LSN_OFFSET),
    ))
}

/// The payload of a record decoded at `offset`.
pub fn record_payload<'a>(segment: &'a [u8], offset: usize, view: &RecordView) -> &'a [u8] {
    let start = offset + RECORD_HEADER_SIZE;
    &segment[start..start + view.payload_size]
}

/// Encodes a segment header.
pub fn encode_segment_header(first_lsn: Lsn, previous_crc: u32) -> [u8; SEGMENT_HEADER_SIZE] {
    let mut header = [0u8; SEGMENT_HEADER_SIZE];
    header[SEGMENT_MAGIC_OFFSET..SEGMENT_MAGIC_OFFSET + 8].copy_from_slice(&SEGMENT_MAGIC);
    header[SEGMENT_VERSION_OFFSET] = FORMAT_VERSION;
    let offset = SEGMENT_FIRST_LSN_OFFSET;
    header[offset..offset + 8].copy_from_slice(&first_lsn.to_le_bytes());
    let offset = SEGMENT_PREVIOUS_CRC_OFFSET;
    header[offset..offset + 4].copy_from_slice(&previous_crc.to_le_bytes());
    let crc = crc32fast::hash(&header[SEGMENT_VERSION_OFFSET..]);
    header[SEGMENT_CRC_OFFSET..SEGMENT_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    header
}

/// A checked segment header: `(first_lsn, previous_crc)`.
///
/// # Errors
/// A static reason if the bytes are not a valid header of this format version.
pub fn decode_segment_header(bytes: &[u8]) -> Result<(Lsn, u32), &'static str> {
    let Some(header) = bytes.get(..SEGMENT_HEADER_SIZE) else {
        return Err("shorter than a segment header");
    };
    if header[SEGMENT_MAGIC_OFFSET..SEGMENT_MAGIC_OFFSET + 8] != SEGMENT_MAGIC {
        return Err("bad magic");
    }
    if crc32fast::hash(&header[SEGMENT_VERSION_OFFSET..]) != read_u32(header, SEGMENT_CRC_OFFSET) {
        return Err("header checksum mismatch");
    }
    if header[SEGMENT_VERSION_OFFSET] != FORMAT_VERSION {
        return Err("unknown format version");
    }
    let first_lsn = read_u64(header, SEGMENT_FIRST_LSN_OFFSET);
    Ok((first_lsn, read_u32(header, SEGMENT_PREVIOUS_CRC_OFFSET)))
}

/// The file name of the segment whose first record has `first_lsn`.
pub fn segment_name(first_lsn: Lsn) -> String {
    format!("wal-{first_lsn:020}.seg")
}

/// Parses a segment file name back to its first lsn.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_detects_every_flipped_bit() {
        let mut buffer = Vec::new();
        push_record(&mut buffer, 7, 42, b"hello, ledger");
        assert_eq!(buffer.len(), record_size(13));
        let crc = seal_record(&mut buffer, 0xDEAD_BEEF, 41);
        let view = decode_record(&buffer, 0, 1 << 20).unwrap();
        assert_eq!(view.crc, crc);
        assert_eq!((view.kind, view.lsn, view.synced_lsn), (7, 42, 41));
        assert_eq!(view.previous_crc, 0xDEAD_BEEF);
        assert_eq!(record_payload(&buffer, 0, &view), b"hello, ledger");
        // Every bit is covered, padding included.
        for byte in 0..buffer.len() {
            for bit in 0..8 {
                let mut damaged = buffer.clone();
                damaged[byte] ^= 1 << bit;
                let decoded = decode_record(&damaged, 0, 1 << 20);
                assert!(
                    decoded.is_none() || decoded.unwrap().lsn != 42,
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn hostile_sizes_are_rejected_without_allocation() {
        let mut buffer = vec![0u8; 64];
        buffer[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_record(&buffer, 0, u32::MAX), None);
        assert_eq!(decode_record(&buffer, 60, u32::MAX), None);
        assert_eq!(decode_record(&buffer, usize::MAX - 3, u32::MAX), None);
        assert_eq!(
            decode_segment_header(&buffer[..10]),
            Err("shorter than a segment header")
        );
    }

    #[test]
    fn segment_header_and_name_round_trip() {
        let header = encode_segment_header(1_000, 77);
        assert_eq!(decode_segment_header(&header), Ok((1_000, 77)));
        assert_eq!(parse_segment_name(&segment_name(1_000)), Some(1_000));
        assert_eq!(parse_segment_name("wal-1.seg"), None);
        assert_eq!(parse_segment_name("snap-00000000000000000001.snap"), None);
    }
}
