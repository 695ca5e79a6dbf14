//! Durable file operations and the checksums that checkpoints record.
//!
//! Crash safety rests on two POSIX facts: `rename` within one file system is atomic, and data
//! is only durable once the file *and* the directory entry pointing at it are fsynced.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::CheckpointError;

type Result<T> = std::result::Result<T, CheckpointError>;

/// Size and CRC-32 of a file's bytes, recorded in `state.json`'s `checksums`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    /// CRC-32 (IEEE) as 8 lower-case hex digits.
    pub crc32: String,
}

impl FileDigest {
    pub fn of(data: &[u8]) -> Self {
        Self {
            bytes: data.len() as u64,
            crc32: crc32_hex(data),
        }
    }

    /// Checks `data`, read from `path`, against this digest.
    pub fn verify(&self, path: &Path, data: &[u8]) -> Result<()> {
        let actual = data.len() as u64;
        if actual < self.bytes {
            return Err(CheckpointError::Truncated {
                path: path.into(),
                expected: self.bytes,
                actual,
            });
        }
        if actual > self.bytes {
            let reason = format!("{actual} bytes on disk, {} when written", self.bytes);
            return Err(CheckpointError::Corrupt {
                path: path.into(),
                reason,
            });
        }
        let crc = crc32_hex(data);
        if crc != self.crc32 {
            let reason = format!(
                "CRC-32 is {crc}, {} when written (bytes changed on disk)",
                self.crc32
            );
            return Err(CheckpointError::Corrupt {
                path: path.into(),
                reason,
            });
        }
        Ok(())
    }
}

pub fn crc32_hex(data: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(data))
}

/// Creates `path`, writes `data` and fsyncs the file.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(CheckpointError::io("create", path))?;
    f.write_all(data)
        .map_err(CheckpointError::io("write", path))?;
    f.sync_all().map_err(CheckpointError::io("fsync", path))
}

/// Replaces `dir/name` by `data` atomically: a temp file `.<name>.tmp` is written, fsynced
/// and renamed over it, then `dir` is fsynced. A crash leaves the old file or the new one.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    write_synced(&tmp, data)?;
    rename(&tmp, &dir.join(name))?;
    sync_dir(dir)
}

/// Fsyncs a directory so that the entries created or renamed in it are durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = File::open(path).map_err(CheckpointError::io("open directory", path))?;
        dir.sync_all()
            .map_err(CheckpointError::io("fsync directory", path))?;
    }
    // Elsewhere directories cannot be opened as files; renames are as durable as the OS makes them.
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|source| CheckpointError::Io {
        op: "rename",
        path: format!("{} to {}", from.display(), to.display()).into(),
        source,
    })
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(CheckpointError::io("read", path))
}

/// Linux `MemAvailable` (free memory plus reclaimable caches), if readable; the same
/// figure the model-memory check uses ([`switchyard_models::memory`]).
pub use switchyard_models::memory::available_bytes as mem_available_bytes;
