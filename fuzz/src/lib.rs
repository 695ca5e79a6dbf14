//! Shared pieces of the fuzz targets: the *bundle* format that packs a directory of files into
//! one fuzz input, a scratch directory to unpack it into, and the memory limit.
//!
//! A bundle is a sequence of records `[name length: u8][name][data length: u32 LE][data]`;
//! a record whose data length runs past the end takes what is left. Names are reduced to
//! `[A-Za-z0-9._-]` (no paths); an empty name, `.` or `..` skips the record, and a later record
//! with the same name replaces an earlier one. So every mutation of a bundle is still a
//! bundle, and the fuzzer can invent file names (say, shards an index points to).
//! `fuzz/seeds.py` writes bundles from the test fixtures.

use std::path::{Path, PathBuf};

/// The records of a bundle, in order, names not yet cleaned.
pub fn unbundle(mut data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while let Some((&name_len, rest)) = data.split_first() {
        let name_len = (name_len as usize).min(rest.len());
        let (name, rest) = rest.split_at(name_len);
        if rest.len() < 4 {
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let rest = &rest[4..];
        let (bytes, rest) = rest.split_at(len.min(rest.len()));
        out.push((name, bytes));
        data = rest;
    }
    out
}

/// A file name made of the bytes of `raw` that are `[A-Za-z0-9._-]`; `None` when that leaves
/// nothing usable.
pub fn clean_name(raw: &[u8]) -> Option<String> {
    let name: String = raw
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        .map(|&b| b as char)
        .collect();
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// An empty directory of this process's own (`switchyard-fuzz-<name>-<pid>`, under /dev/shm
/// when it exists so runs do not wear the disk), emptied again on every call.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("switchyard-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch directory");
    dir
}

/// Writes the bundle's files into `dir` and returns them (name, bytes), last record winning.
pub fn write_bundle<'a>(dir: &Path, data: &'a [u8]) -> Vec<(String, &'a [u8])> {
    let mut files: Vec<(String, &[u8])> = Vec::new();
    for (raw, bytes) in unbundle(data) {
        let Some(name) = clean_name(raw) else {
            continue;
        };
        files.retain(|(n, _)| *n != name);
        files.push((name, bytes));
    }
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes)
            .expect("cannot write into the fuzz scratch directory");
    }
    files
}

/// The bytes of the file called `name` in `files`.
pub fn file<'a>(files: &[(String, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    files.iter().find(|(n, _)| n == name).map(|(_, b)| *b)
}

/// Memory the loaders may plan for in a fuzz run, in bytes: a model or config that asks for
/// more must be refused by the loader's own memory check, before it allocates, which is the
/// property the targets check (libFuzzer's `-malloc_limit_mb` turns a larger allocation into
/// a crash).
pub const MEMORY_LIMIT: &str = "1GiB";

/// Caps the memory Switchyard's loaders believe is available to [`MEMORY_LIMIT`].
pub fn limit_memory() {
    std::env::set_var(switchyard_io::MEMORY_LIMIT_VAR, MEMORY_LIMIT);
}
