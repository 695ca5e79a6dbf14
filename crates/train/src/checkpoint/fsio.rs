//! Durable file operations and run-directory bookkeeping for checkpoints.
//!
//! Crash safety rests on two POSIX facts: `rename` within one file system is atomic, and data
//! is only durable once the file *and* the directory entry pointing at it are fsynced.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CheckpointError;

type Result<T> = std::result::Result<T, CheckpointError>;

/// Name of the pointer file in a run directory; it holds the newest step directory's name.
pub const LATEST_FILE: &str = "latest";
/// Prefix of complete checkpoint directories: `step-<step:08>`.
pub const STEP_DIR_PREFIX: &str = "step-";
/// Prefix of directories being written (`tmp-<step>-<pid>`); never loaded.
pub const TMP_DIR_PREFIX: &str = "tmp-";
/// Prefix under which an existing step directory is moved aside while it is replaced.
pub const OLD_DIR_PREFIX: &str = "old-";

pub fn step_dir_name(step: u64) -> String {
    format!("{STEP_DIR_PREFIX}{step:08}")
}

/// The step of a `step-<digits>` name.
pub fn parse_step_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(STEP_DIR_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

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

/// Atomically points `run_dir/latest` at `dir_name`: write a temp file, fsync, rename, fsync
/// the run directory. A crash leaves either the old pointer or the new one.
pub fn write_latest(run_dir: &Path, dir_name: &str) -> Result<()> {
    let tmp = run_dir.join(format!(
        "{LATEST_FILE}.{TMP_DIR_PREFIX}{}",
        std::process::id()
    ));
    write_synced(&tmp, format!("{dir_name}\n").as_bytes())?;
    rename(&tmp, &run_dir.join(LATEST_FILE))?;
    sync_dir(run_dir)
}

/// The directory name `run_dir/latest` holds, if the file exists. It must be a plain
/// `step-*` name, so a damaged pointer cannot lead outside the run directory.
pub fn read_latest(run_dir: &Path) -> Result<Option<String>> {
    let path = run_dir.join(LATEST_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CheckpointError::Io {
                op: "read",
                path,
                source: e,
            })
        }
    };
    let name = text.trim();
    if parse_step_dir_name(name).is_none() {
        let reason = format!(
            "holds {name:?}, not a step-<number> directory name; delete the file to load the \
             newest step-* directory instead"
        );
        return Err(CheckpointError::Format { path, reason });
    }
    Ok(Some(name.to_string()))
}

/// Complete checkpoints of a run, `(step, dir)` sorted by step. A `step-*` directory is only
/// created by renaming a fully written and fsynced temp directory; one without `state.json`
/// (written last) was not made by us and is skipped.
pub fn list_step_dirs(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(run_dir).map_err(CheckpointError::io("list", run_dir))? {
        let entry = entry.map_err(CheckpointError::io("list", run_dir))?;
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(parse_step_dir_name) else {
            continue;
        };
        let dir = entry.path();
        if dir.join(super::STATE_FILE).is_file() {
            out.push((step, dir));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes leftovers of interrupted saves (`tmp-*`, `old-*`, `latest.tmp-*`), except `keep`.
pub fn remove_stale(run_dir: &Path, keep: &Path) -> Result<()> {
    for entry in fs::read_dir(run_dir).map_err(CheckpointError::io("list", run_dir))? {
        let entry = entry.map_err(CheckpointError::io("list", run_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let stale_dir = name.starts_with(TMP_DIR_PREFIX) || name.starts_with(OLD_DIR_PREFIX);
        let stale_pointer = name.starts_with(&format!("{LATEST_FILE}.{TMP_DIR_PREFIX}"));
        if path == keep || !(stale_dir || stale_pointer) {
            continue;
        }
        if path.is_dir() {
            fs::remove_dir_all(&path).map_err(CheckpointError::io("remove", &path))?;
        } else {
            fs::remove_file(&path).map_err(CheckpointError::io("remove", &path))?;
        }
    }
    Ok(())
}

/// Deletes all but the `keep_last` newest complete checkpoints, never `current`.
pub fn prune(run_dir: &Path, keep_last: usize, current: &Path) -> Result<()> {
    let mut others: Vec<_> = list_step_dirs(run_dir)?
        .into_iter()
        .filter(|(_, d)| d != current)
        .collect();
    others.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
    for (_, dir) in others.into_iter().skip(keep_last.saturating_sub(1)) {
        fs::remove_dir_all(&dir).map_err(CheckpointError::io("remove old checkpoint", &dir))?;
    }
    Ok(())
}
