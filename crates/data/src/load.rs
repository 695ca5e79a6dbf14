//! Users' own text: a single file as one domain, or a directory `<dir>/<domain>/*.txt`.
//!
//! Files are read as bytes and converted lossily, since the byte-level tokenizer does not need
//! valid UTF-8. Long files are cut into documents of about [`DOC_CHUNK_BYTES`] at line breaks,
//! so that even a domain with a single file can be split into train and validation.
//! Everything is visited in sorted order, so the same files always give the same documents.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::corpus::Document;
use crate::error::DataError;

/// Large enough to hold many training windows, small enough that a few-hundred-KiB file still
/// yields dozens of documents to split between train and validation.
pub const DOC_CHUNK_BYTES: usize = 4096;
const TEXT_EXTENSION: &str = "txt";

/// One domain named after the file stem (`data/legal.txt` → `legal`).
pub fn load_text_file(path: impl AsRef<Path>) -> Result<Vec<Document>, DataError> {
    let path = path.as_ref();
    let text = read_text(path)?;
    let domain = path
        .file_stem()
        .map_or_else(|| "text".into(), |s| s.to_string_lossy().into_owned());
    Ok(documents(&domain, &text))
}

/// One domain per sub-directory, named after it, from its `.txt` files. Hidden entries (names
/// starting with `.`) and files directly inside `dir` are ignored.
pub fn load_domain_dir(dir: impl AsRef<Path>) -> Result<Vec<Document>, DataError> {
    let dir = dir.as_ref();
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DataError::MissingDir {
                path: dir.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(DataError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(DataError::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Ok(_) => {}
    }

    let domain_dirs: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if domain_dirs.is_empty() {
        return Err(DataError::NoDomains {
            path: dir.to_path_buf(),
        });
    }

    let mut docs = Vec::new();
    for domain_dir in domain_dirs {
        let files: Vec<PathBuf> = sorted_entries(&domain_dir)?
            .into_iter()
            .filter(|p| p.is_file() && is_text(p))
            .collect();
        if files.is_empty() {
            return Err(DataError::NoTextFiles { path: domain_dir });
        }
        let domain = file_name(&domain_dir);
        for file in files {
            docs.extend(documents(&domain, &read_text(&file)?));
        }
    }
    Ok(docs)
}

/// Cuts `text` into pieces of at most `max_bytes` (or one character, if that is longer),
/// after the last line break in the second half of each piece where there is one, so lines
/// stay whole. Whitespace-only pieces are dropped.
pub fn chunk_text(text: &str, max_bytes: usize) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = if rest.len() <= max_bytes {
            rest.len()
        } else {
            let mut end = max_bytes;
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            match rest[..end].rfind('\n') {
                Some(i) if i + 1 >= max_bytes / 2 => i + 1,
                // Never cut nothing: a character wider than max_bytes becomes its own piece.
                _ if end == 0 => rest.chars().next().map_or(rest.len(), char::len_utf8),
                _ => end,
            }
        };
        chunks.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    chunks.retain(|c| !c.trim().is_empty());
    chunks
}

fn documents(domain: &str, text: &str) -> Vec<Document> {
    chunk_text(text, DOC_CHUNK_BYTES)
        .into_iter()
        .map(|chunk| Document {
            domain: domain.to_string(),
            text: chunk.to_string(),
        })
        .collect()
}

fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io_err = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        if !file_name(&path).starts_with('.') {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_text(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(TEXT_EXTENSION))
}
