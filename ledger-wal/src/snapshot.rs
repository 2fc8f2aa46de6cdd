//! Snapshot files: `snap-<lsn>.snap`, a checksummed header then the caller's bytes.
//!
//! Write order (so a crash at any point leaves either no new snapshot or a complete one):
//! create `snap-<lsn>.snap.tmp`, write, fsync the file, rename to `snap-<lsn>.snap`, fsync the
//! directory. Loading checks the header crc, then that the payload size equals the file's size
//! (so a damaged size field cannot drive the allocation), then the payload crc.
//!
//! Snapshots are read with plain `read_at` through the `Storage` trait rather than memory
//! mapped: the caller needs an owned `Vec<u8>` in `Recovery` anyway (so a map would only add a
//! copy), a map of a file another process truncates raises SIGBUS instead of an error, and
//! reading through the trait lets `FaultStorage` inject bit flips into snapshots too.

use crate::error::{Result, WalError};
use crate::{Lsn, Storage};

const SNAPSHOT_MAGIC: [u8; 8] = *b"PLWALSNP";
const SNAPSHOT_VERSION: u8 = 1;
/// Size of the snapshot header.
pub const SNAPSHOT_HEADER_SIZE: usize = 40;
const MAGIC_OFFSET: usize = 0;
const HEADER_CRC_OFFSET: usize = MAGIC_OFFSET + 8;
const VERSION_OFFSET: usize = HEADER_CRC_OFFSET + 4;
const PADDING_OFFSET: usize = VERSION_OFFSET + 1;
const LSN_OFFSET: usize = PADDING_OFFSET + 3;
const PAYLOAD_SIZE_OFFSET: usize = LSN_OFFSET + 8;
const PAYLOAD_CRC_OFFSET: usize = PAYLOAD_SIZE_OFFSET + 8;
const RESERVED_OFFSET: usize = PAYLOAD_CRC_OFFSET + 4;
const _: () = assert!(RESERVED_OFFSET + 4 == SNAPSHOT_HEADER_SIZE);

/// The file name of the snapshot at `lsn`.
pub fn snapshot_name(lsn: Lsn) -> String {
    format!("snap-{lsn:020}.snap")
}

/// Parses a snapshot file name back to its lsn.
pub fn parse_snapshot_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// True for a snapshot temp file left by a crash.
pub fn is_snapshot_temp_name(name: &str) -> bool {
    name.strip_suffix(".tmp")
        .and_then(parse_snapshot_name)
        .is_some()
}

fn encode_header(lsn: Lsn, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_SIZE] {
    let mut header = [0u8; SNAPSHOT_HEADER_SIZE];
    header[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[VERSION_OFFSET] = SNAPSHOT_VERSION;
    header[LSN_OFFSET..LSN_OFFSET + 8].copy_from_slice(&lsn.to_le_bytes());
    let size = payload.len() as u64;
    header[PAYLOAD_SIZE_OFFSET..PAYLOAD_SIZE_OFFSET + 8].copy_from_slice(&size.to_le_bytes());
    let crc = crc32fast::hash(payload);
    header[PAYLOAD_CRC_OFFSET..PAYLOAD_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32fast::hash(&header[VERSION_OFFSET..]);
    header[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&header_crc.to_le_bytes());
    header
}

/// Writes the snapshot at `lsn` durably (temp file, fsync, rename, fsync directory).
///
/// # Errors
/// Any storage error; the temp file may be left behind (recovery removes it).
pub fn write_snapshot<S: Storage>(storage: &S, lsn: Lsn, payload: &[u8]) -> Result<()> {
    let name = snapshot_name(lsn);
    let temp_name = format!("{name}.tmp");
    let header = encode_header(lsn, payload);
    storage.create(&temp_name).map_err(WalError::from_io)?;
    let written = storage
        .append(&temp_name, &header)
        .and_then(|()| storage.append(&temp_name, payload));
    if let Err(error) = written {
        // Best effort: the temp file is garbage either way and recovery removes leftovers.
        let _ = storage.remove(&temp_name);
        return Err(WalError::from_io(error));
    }
    storage.sync(&temp_name)?;
    storage.rename(&temp_name, &name)?;
    storage.sync_dir()?;
    Ok(())
}

/// Loads the snapshot file `name` (lsn `lsn`); `Ok(None)` if it is damaged in any way.
///
/// # Errors
/// Only storage I/O errors; damage is `Ok(None)` so the caller can fall back.
pub fn read_snapshot<S: Storage>(
    storage: &S,
    name: &str,
    lsn: Lsn,
    size_bytes_max: u64,
) -> Result<Option<Vec<u8>>> {
    let file_size = storage.len(name)?;
    if file_size < SNAPSHOT_HEADER_SIZE as u64 {
        return Ok(None);
    }
    let mut header = [0u8; SNAPSHOT_HEADER_SIZE];
    storage.read_at(name, 0, &mut header)?;
    let Some((payload_size, payload_crc)) = read_snapshot_check_header(&header, lsn) else {
        return Ok(None);
    };
    // The size field must describe the file exactly and stay under the limit before anything
    // is allocated from it.
    if payload_size != file_size - SNAPSHOT_HEADER_SIZE as u64 || payload_size > size_bytes_max {
        return Ok(None);
    }
    let mut payload = vec![0u8; payload_size as usize];
    storage.read_at(name, SNAPSHOT_HEADER_SIZE as u64, &mut payload)?;
    if crc32fast::hash(&payload) != payload_crc {
        return Ok(None);
    }
    Ok(Some(payload))
}

fn read_snapshot_check_header(header: &[u8; SNAPSHOT_HEADER_SIZE], lsn: Lsn) -> Option<(u64, u32)> {
    let field = |offset: usize, size: usize| &header[offset..offset + size];
    if field(MAGIC_OFFSET, 8) != SNAPSHOT_MAGIC || header[VERSION_OFFSET] != SNAPSHOT_VERSION {
        return None;
    }
    let header_crc = u32::from_le_bytes(field(HEADER_CRC_OFFSET, 4).try_into().ok()?);
    if crc32fast::hash(&header[VERSION_OFFSET..]) != header_crc {
        return None;
    }
    if u64::from_le_bytes(field(LSN_OFFSET, 8).try_into().ok()?) != lsn {
        return None;
    }
    let payload_size = u64::from_le_bytes(field(PAYLOAD_SIZE_OFFSET, 8).try_into().ok()?);
    let payload_crc = u32::from_le_bytes(field(PAYLOAD_CRC_OFFSET, 4).try_into().ok()?);
    Some((payload_size, payload_crc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaultStorage;

    #[test]
    fn snapshot_round_trips_and_any_flipped_bit_is_rejected() {
        let storage = FaultStorage::new(1);
        write_snapshot(&storage, 9, b"state at nine").unwrap();
        let name = snapshot_name(9);
        assert_eq!(
            read_snapshot(&storage, &name, 9, 1 << 20).unwrap().unwrap(),
            b"state at nine"
        );
        let size = storage.len(&name).unwrap();
        for byte in 0..size {
            // Padding bytes of the header are covered by the header crc too.
            storage.flip_bit(&name, byte, 3);
            assert_eq!(
                read_snapshot(&storage, &name, 9, 1 << 20).unwrap(),
                None,
                "byte {byte}"
            );
            storage.flip_bit(&name, byte, 3);
        }
        assert_eq!(
            read_snapshot(&storage, &name, 8, 1 << 20).unwrap(),
            None,
            "wrong lsn"
        );
        assert_eq!(
            read_snapshot(&storage, &name, 9, 4).unwrap(),
            None,
            "over the limit"
        );
    }

    #[test]
    fn a_crash_before_the_directory_sync_leaves_no_snapshot() {
        let storage = FaultStorage::new(2);
        storage.set_operation_budget(Some(4)); // create, append, append, sync — no rename
        assert!(write_snapshot(&storage, 3, b"x").is_err());
        storage.crash();
        assert!(storage.list().unwrap().is_empty());
    }
}
