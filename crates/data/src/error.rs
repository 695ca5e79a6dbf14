//! Errors for loading user data and building datasets. Each message names the path or value
//! involved and says how to fix it, because most of these reach a user at the command line.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::load::DOC_CHUNK_BYTES;

#[derive(Debug, Error)]
pub enum DataError {
    /// The OS error is the `source`, so `{:#}` prints it after this message.
    #[error("cannot read {}; check that it exists and is readable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "data directory {} does not exist; create it with one sub-directory per domain \
         holding .txt files, e.g. {}",
        path.display(), path.join("prose").join("part1.txt").display()
    )]
    MissingDir { path: PathBuf },

    #[error(
        "{} is not a directory; pass a directory laid out as <dir>/<domain>/*.txt, \
         or load a single file as one domain with load_text_file",
        path.display()
    )]
    NotADirectory { path: PathBuf },

    #[error(
        "{} has no domain sub-directories; expected <dir>/<domain>/*.txt, e.g. {}",
        path.display(), path.join("prose").join("part1.txt").display()
    )]
    NoDomains { path: PathBuf },

    #[error(
        "domain directory {} has no .txt files; add at least one .txt file or remove the directory",
        path.display()
    )]
    NoTextFiles { path: PathBuf },

    #[error("{} is empty (nothing but whitespace); add text to it or delete it", path.display())]
    EmptyFile { path: PathBuf },

    #[error("no documents to build a dataset from; generate the built-in corpus or load a data directory")]
    NoDocuments,

    #[error(
        "valid_fraction must be strictly between 0 and 1, got {value}; \
         e.g. 0.1 keeps 10% of each domain's documents for validation"
    )]
    InvalidFraction { value: f64 },

    #[error("{name} must be at least 1, got 0")]
    ZeroSize { name: &'static str },

    #[error(
        "domain `{domain}` has {count} document(s), but a train/validation split needs at least 2 \
         per domain; add more text (files longer than {DOC_CHUNK_BYTES} bytes are cut into several documents)"
    )]
    TooFewDocuments { domain: String, count: usize },

    #[error(
        "{what} has {tokens} tokens, but one window needs seq_len + 1 = {needed}; \
         lower seq_len, raise valid_fraction, or add more text"
    )]
    TooFewTokens {
        what: String,
        tokens: usize,
        needed: usize,
    },

    #[error(
        "batch_size {batch_size} exceeds the {windows} training windows; \
         lower batch_size or seq_len, or add more data"
    )]
    BatchTooLarge { batch_size: usize, windows: usize },

    #[error(
        "cursor position {position} is past the {windows} windows of this dataset; resume with \
         the same data, seq_len and batch size the cursor was saved with"
    )]
    CursorOutOfRange { position: usize, windows: usize },

    #[error(
        "document domain `{domain}` is not in the domain index; build the index from the same documents"
    )]
    UnknownDomain { domain: String },

    #[error(
        "no tokenizer at {}; give the path of a HuggingFace tokenizer.json (or a directory holding one)",
        path.display()
    )]
    MissingTokenizer { path: PathBuf },

    #[error("cannot use the tokenizer {}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
}
