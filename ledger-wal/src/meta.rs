//! `MetaFile`: a small value (the Paxos acceptor's promised ballot) replaced atomically.
//!
//! A write goes to `<name>.tmp`, which is fsynced, renamed over `<name>`, and the directory is
//! fsynced. A crash at any byte of this sequence leaves `<name>` holding either the old value or
//! the new one, never a mix: the rename is the commit point. The file carries a crc so a bit
//! flipped at rest is reported (`WalError::BadMeta`) rather than read as a different ballot;
//! falling back to an older value would be unsafe for Paxos (I4), so there is no fallback.

use crate::Storage;
use crate::error::{Result, WalError};

const META_MAGIC: [u8; 8] = *b"PLWALMET";
const META_VERSION: u8 = 1;
const META_HEADER_SIZE: usize = 32;
const MAGIC_OFFSET: usize = 0;
const CRC_OFFSET: usize = MAGIC_OFFSET + 8;
const VERSION_OFFSET: usize = CRC_OFFSET + 4;
const PADDING_OFFSET: usize = VERSION_OFFSET + 1;
const SEQUENCE_OFFSET: usize = PADDING_OFFSET + 3;
const SIZE_OFFSET: usize = SEQUENCE_OFFSET + 8;
const RESERVED_OFFSET: usize = SIZE_OFFSET + 4;
const _: () = assert!(RESERVED_OFFSET + 4 == META_HEADER_SIZE);

/// The largest value a `MetaFile` holds.
pub const META_SIZE_BYTES_MAX: usize = 64 * 1024;

/// A small durable value that a crash at any byte leaves either old or new.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), ledger_wal::WalError> {
/// use ledger_wal::{FaultStorage, MetaFile};
/// let storage = FaultStorage::new(1);
/// let (mut meta, value) = MetaFile::open(storage.clone(), "promised")?;
/// assert_eq!(value, None);
/// meta.write(b"ballot 7")?;
/// storage.crash();
/// let (_meta, value) = MetaFile::open(storage, "promised")?;
/// assert_eq!(value.as_deref(), Some(&b"ballot 7"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MetaFile<S: Storage> {
    storage: S,
    name: String,
    temp_name: String,
    sequence: u64,
    poisoned: bool,
}

impl<S: Storage> MetaFile<S> {
    /// Opens the metadata file `name`, removing a temp file left by a crash, and returns its
    /// value (`None` if it was never written).
    ///
    /// # Errors
    /// `BadMeta` if the file is damaged; storage errors.
    pub fn open(storage: S, name: &str) -> Result<(Self, Option<Vec<u8>>)> {
        let temp_name = format!("{name}.tmp");
        let names = storage.list()?;
        if names.contains(&temp_name) {
            storage.remove(&temp_name)?;
        }
        let mut meta = MetaFile {
            storage,
            name: name.to_string(),
            temp_name,
            sequence: 0,
            poisoned: false,
        };
        let value = if names.iter().any(|existing| existing == name) {
            let (sequence, value) = meta.read_checked()?;
            meta.sequence = sequence;
            Some(value)
        } else {
            None
        };
        Ok((meta, value))
    }

    /// Reads the current value back from the storage.
    ///
    /// # Errors
    /// `BadMeta` if the file is damaged; storage errors.
    pub fn read(&self) -> Result<Vec<u8>> {
        Ok(self.read_checked()?.1)
    }

    fn read_checked(&self) -> Result<(u64, Vec<u8>)> {
        let bad = |reason| WalError::BadMeta {
            file: self.name.clone(),
            reason,
        };
        let size = self.storage.len(&self.name)?;
        if size < META_HEADER_SIZE as u64 || size > (META_HEADER_SIZE + META_SIZE_BYTES_MAX) as u64
        {
            return Err(bad("impossible size"));
        }
        let mut bytes = vec![0u8; size as usize];
        self.storage.read_at(&self.name, 0, &mut bytes)?;
        let field = |offset: usize, width: usize| &bytes[offset..offset + width];
        if field(MAGIC_OFFSET, 8) != META_MAGIC || bytes[VERSION_OFFSET] != META_VERSION {
            return Err(bad("bad magic or version"));
        }
        let crc = u32::from_le_bytes(field(CRC_OFFSET, 4).try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[VERSION_OFFSET..]) != crc {
            return Err(bad("checksum mismatch"));
        }
        let value_size = u32::from_le_bytes(field(SIZE_OFFSET, 4).try_into().expect("4 bytes"));
        if value_size as usize != bytes.len() - META_HEADER_SIZE {
            return Err(bad("size field does not match the file"));
        }
        let sequence = u64::from_le_bytes(field(SEQUENCE_OFFSET, 8).try_into().expect("8 bytes"));
        Ok((sequence, bytes[META_HEADER_SIZE..].to_vec()))
    }

    /// Replaces the value durably: when this returns `Ok`, a crash leaves the new value.
    ///
    /// # Errors
    /// `PayloadTooLarge` over `META_SIZE_BYTES_MAX`; `Poisoned` after an earlier failed fsync;
    /// storage errors (after which the old value may still be the durable one).
    pub fn write(&mut self, value: &[u8]) -> Result<()> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        if value.len() > META_SIZE_BYTES_MAX {
            let (size_bytes, limit_bytes) = (value.len() as u64, META_SIZE_BYTES_MAX as u64);
            return Err(WalError::PayloadTooLarge {
                size_bytes,
                limit_bytes,
            });
        }
        let sequence = self.sequence + 1;
        let mut bytes = vec![0u8; META_HEADER_SIZE];
        bytes[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&META_MAGIC);
        bytes[VERSION_OFFSET] = META_VERSION;
        bytes[SEQUENCE_OFFSET..SEQUENCE_OFFSET + 8].copy_from_slice(&sequence.to_le_bytes());
        let size = value.len() as u32;
        bytes[SIZE_OFFSET..SIZE_OFFSET + 4].copy_from_slice(&size.to_le_bytes());
        bytes.extend_from_slice(value);
        let crc = crc32fast::hash(&bytes[VERSION_OFFSET..]);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        self.storage
            .create(&self.temp_name)
            .map_err(WalError::from_io)?;
        self.storage
            .append(&self.temp_name, &bytes)
            .map_err(WalError::from_io)?;
        // A failed fsync is never retried (the page cache may have dropped the pages).
        let durable = self.storage.sync(&self.temp_name).and_then(|()| {
            self.storage.rename(&self.temp_name, &self.name)?;
            self.storage.sync_dir()
        });
        if let Err(error) = durable {
            self.poisoned = true;
            return Err(WalError::Io(error));
        }
        self.sequence = sequence;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FaultStorage, PendingFate};

    /// A crash after every operation of a write, with every pending write lost, persisted or
    /// torn at each byte, leaves the old or the new value.
    #[test]
    fn a_crash_at_any_byte_leaves_old_or_new() {
        let old = b"ballot 1".to_vec();
        let new = b"ballot 22, a longer value".to_vec();
        for budget in 0..8 {
            for keep_bytes in (0..80).step_by(7) {
                for fate in [
                    PendingFate::Lost,
                    PendingFate::Persisted,
                    PendingFate::Torn { keep_bytes },
                ] {
                    let storage = FaultStorage::new(budget);
                    let (mut meta, _) = MetaFile::open(storage.clone(), "promised").unwrap();
                    meta.write(&old).unwrap();
                    storage.set_operation_budget(Some(budget));
                    let finished = meta.write(&new).is_ok();
                    storage.crash_with(|_| fate);
                    let (_, value) = MetaFile::open(storage.clone(), "promised").unwrap();
                    let value = value.unwrap();
                    assert!(value == old || value == new, "budget {budget}");
                    if finished {
                        assert_eq!(value, new);
                    }
                }
            }
        }
    }

    #[test]
    fn a_flipped_bit_is_reported_and_a_failed_sync_poisons() {
        let storage = FaultStorage::new(3);
        let (mut meta, _) = MetaFile::open(storage.clone(), "promised").unwrap();
        meta.write(b"ballot 3").unwrap();
        storage.flip_bit("promised", 35, 0);
        assert!(matches!(meta.read(), Err(WalError::BadMeta { .. })));
        storage.fail_next_sync();
        assert!(meta.write(b"ballot 4").is_err());
        assert!(matches!(meta.write(b"ballot 5"), Err(WalError::Poisoned)));
    }
}
