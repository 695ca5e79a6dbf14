//! [`CheckpointError`] (files of a run directory) and [`LoadError`] (a model from them):
//! every message names the file or directory involved and says what to do about it.

use std::path::PathBuf;

/// What to do when a checkpoint's own files are damaged.
const DAMAGED_HINT: &str = "load an earlier checkpoint of the run (pass its step-* directory)";

/// Everything that can go wrong while saving, loading or restoring a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file-system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Neither a step directory nor a run directory holding one.
    #[error(
        "no checkpoint at {path}: expected a step directory holding state.json, or a run \
         directory with a `latest` file or step-* directories; check the path"
    )]
    NotFound { path: PathBuf },
    /// A file is shorter than `state.json` says it was when written.
    #[error(
        "{path} is truncated: {actual} bytes on disk, {expected} when written (an interrupted \
         copy or a full disk?); {DAMAGED_HINT}"
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// A file's size or checksum differs from the one recorded when it was written.
    #[error("{path} is corrupt: {reason}; {DAMAGED_HINT}")]
    Corrupt { path: PathBuf, reason: String },
    /// A tensor holds NaN or infinite values (see [`crate::finite`]): the file is damaged or
    /// was written from a diverged model.
    #[error(
        "{path}: tensor `{tensor}` holds {count} non-finite value(s) (the first, at flat index \
         {first_index}, is {first}); {DAMAGED_HINT}"
    )]
    NonFinite {
        path: PathBuf,
        tensor: String,
        count: usize,
        first_index: usize,
        first: f64,
    },
    /// A file cannot be parsed, or holds a value this version cannot use.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// The checkpoint does not fit the model or optimiser it is restored into; every problem
    /// is listed, one per line.
    #[error(
        "{path} does not match the model ({} problems):\n  - {}\nhint: build the model from \
         the checkpoint's config.json, or check that the model code has not renamed parameters",
        problems.len(),
        problems.join("\n  - ")
    )]
    Mismatch {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// Loading would need more memory than the machine has available.
    #[error(
        "{path} needs about {need_gib:.1} GiB of memory to load (its files are read, then \
         turned into tensors), but only {available_gib:.1} GiB are available; free memory or \
         load it on a larger machine"
    )]
    TooLarge {
        path: PathBuf,
        need_gib: f64,
        available_gib: f64,
    },
    /// What the caller asked to save or restore is unusable.
    #[error("invalid checkpoint contents: {0}")]
    Invalid(String),
    /// A tensor operation failed inside candle.
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl CheckpointError {
    /// Maps an I/O error of operation `op` (e.g. `"read"`) on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CheckpointError::Io { op, path, source }
    }

    /// A file that cannot be parsed, with the reason.
    pub fn format(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        CheckpointError::Format {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Everything that can go wrong while loading a model from a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint does not hold a model this build can construct, or its router buffers
    /// do not fit the model.
    #[error("cannot load {}: {reason}", path.display())]
    Incompatible { path: PathBuf, reason: String },
    #[error("model: {0}")]
    Model(#[from] switchyard_models::ModelError),
    /// Reading the tokenizer the checkpoint carries failed.
    #[error("data: {0}")]
    Data(#[from] switchyard_data::DataError),
}

impl From<candle_core::Error> for LoadError {
    fn from(e: candle_core::Error) -> Self {
        LoadError::Checkpoint(e.into())
    }
}
