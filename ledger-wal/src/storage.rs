//! The `Storage` trait — the only way ledger-wal touches a disk — and its `std::fs`
//! implementation.
//!
//! A storage is one flat directory of named files. Writes only append; the only other mutations
//! are truncate, remove and rename. Durability is explicit: `sync` makes one file's data durable
//! (fdatasync) and `sync_dir` makes the directory's names durable (creates, renames, removes).
//! `FaultStorage` implements the same trait in memory with injected faults.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// A directory of named files with explicit durability.
///
/// Names are plain file names (no separators). Implementations must be usable from many threads.
pub trait Storage: Send + Sync + 'static {
    /// Lists the names of the files in the directory, in no particular order.
    ///
    /// # Errors
    /// Any I/O error.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates an empty file, replacing any file of that name. The name is durable only after
    /// `sync_dir`.
    ///
    /// # Errors
    /// Any I/O error.
    fn create(&self, name: &str) -> io::Result<()>;
    /// Appends `bytes` at the end of the file. Not durable until `sync`. On a full disk a prefix
    /// of `bytes` may have been written before the error (`ErrorKind::StorageFull`).
    ///
    /// # Errors
    /// Any I/O error; `NotFound` if the file does not exist.
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Reads exactly `buffer.len()` bytes at `offset`.
    ///
    /// # Errors
    /// `UnexpectedEof` if the file is shorter, or any I/O error.
    fn read_at(&self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<()>;
    /// The file's current length in bytes.
    ///
    /// # Errors
    /// Any I/O error; `NotFound` if the file does not exist.
    fn len(&self, name: &str) -> io::Result<u64>;
    /// Makes the file's data durable (fdatasync).
    ///
    /// # Errors
    /// Any I/O error. After an error the caller must assume written data may be lost.
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Shortens the file to `len_bytes`. Not durable until `sync`.
    ///
    /// # Errors
    /// Any I/O error.
    fn truncate(&self, name: &str, len_bytes: u64) -> io::Result<()>;
    /// Removes the file. Durable only after `sync_dir`.
    ///
    /// # Errors
    /// Any I/O error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to`, atomically replacing `to`. Durable only after `sync_dir`.
    ///
    /// # Errors
    /// Any I/O error.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the directory's entries durable (fsync of the directory).
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_dir(&self) -> io::Result<()>;
}

/// `Storage` on a real directory through `std::fs`.
///
/// Open file handles are cached so the hot path (`append` + `sync`) costs one `write` and one
/// `fdatasync` system call, with no `open`.
#[derive(Debug)]
pub struct FileStorage {
    directory: PathBuf,
    handles: Mutex<HashMap<String, Arc<File>>>,
}

impl FileStorage {
    /// Opens (creating it if needed) the directory `directory`.
    ///
    /// # Errors
    /// Any I/O error while creating the directory.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use ledger_wal::{FileStorage, Storage};
    /// let directory = std::env::temp_dir().join(format!("ledger-wal-doc-{}", std::process::id()));
    /// let storage = FileStorage::open(&directory)?;
    /// storage.create("hello")?;
    /// storage.append("hello", b"world")?;
    /// storage.sync("hello")?;
    /// assert_eq!(storage.len("hello")?, 5);
    /// # std::fs::remove_dir_all(&directory)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(directory: impl AsRef<Path>) -> io::Result<Self> {
        let directory = directory.as_ref().to_path_buf();
        fs::create_dir_all(&directory)?;
        Ok(FileStorage {
            directory,
            handles: Mutex::new(HashMap::new()),
        })
    }

    /// The directory this storage works in.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The path of `name`, refusing names that would leave the directory.
    fn path(&self, name: &str) -> io::Result<PathBuf> {
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains('/');
        if !plain {
            let message = format!("file storage: {name:?} is not a plain file name");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        Ok(self.directory.join(name))
    }

    fn handle(&self, name: &str) -> io::Result<Arc<File>> {
        if let Some(file) = self.handles.lock().get(name) {
            return Ok(Arc::clone(file));
        }
        // Open outside the lock; a racing open of the same name is harmless (same inode).
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(self.path(name)?)?,
        );
        self.handles
            .lock()
            .insert(name.to_string(), Arc::clone(&file));
        Ok(file)
    }
}

impl Storage for FileStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.directory)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(self.path(name)?)?;
        file.set_len(0)?;
        self.handles.lock().insert(name.to_string(), Arc::new(file));
        Ok(())
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let file = self.handle(name)?;
        (&*file).write_all(bytes)
    }

    fn read_at(&self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.handle(name)?.read_exact_at(buffer, offset)
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(self.handle(name)?.metadata()?.len())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.handle(name)?.sync_data()
    }

    fn truncate(&self, name: &str, len_bytes: u64) -> io::Result<()> {
        self.handle(name)?.set_len(len_bytes)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.handles.lock().remove(name);
        fs::remove_file(self.path(name)?)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut handles = self.handles.lock();
        handles.remove(from);
        handles.remove(to);
        drop(handles);
        fs::rename(self.path(from)?, self.path(to)?)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.directory)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        let directory =
            std::env::temp_dir().join(format!("ledger-wal-names-{}", std::process::id()));
        let storage = FileStorage::open(&directory).unwrap();
        for name in ["", ".", "..", "../escape", "a/b"] {
            let error = storage.create(name).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
        storage.create("plain").unwrap();
        assert!(storage.rename("plain", "../escape").is_err());
        assert_eq!(storage.list().unwrap(), vec!["plain".to_string()]);
        fs::remove_dir_all(&directory).unwrap();
    }
}
