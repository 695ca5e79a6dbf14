//! Errors of the interop crate. Each variant names the file, key or tensor involved, so the
//! message alone says what is wrong.

use std::path::PathBuf;

use switchyard_core::MoeError;
use switchyard_models::ModelError;

use crate::arch::HfArch;

#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// `config.json` names an architecture this crate does not implement.
    #[error(
        "unsupported architecture `{found}` in {path}; supported: {}",
        HfArch::supported_list()
    )]
    UnknownArchitecture { found: String, path: PathBuf },

    /// A `config.json` key is missing or has a value we cannot use.
    #[error("{path}: `{key}`: {reason}")]
    Config {
        path: PathBuf,
        key: String,
        reason: String,
    },

    /// A feature of the checkpoint that Switchyard does not implement (e.g. YaRN RoPE scaling).
    #[error("{arch}: {what} is not supported{}", hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default())]
    Unsupported {
        arch: String,
        what: String,
        hint: Option<String>,
    },

    /// A file the checkpoint needs is absent.
    #[error("missing file {path}{}", listed_in.as_ref().map(|p| format!(" (listed in {})", p.display())).unwrap_or_default())]
    MissingFile {
        path: PathBuf,
        listed_in: Option<PathBuf>,
    },

    /// The directory holds no `*.safetensors` weights.
    #[error("no model.safetensors, model.safetensors.index.json or *.safetensors in {dir}")]
    NoWeights { dir: PathBuf },

    /// A tensor the architecture needs is not in any shard.
    #[error("tensor `{name}` is missing from the checkpoint in {dir}")]
    MissingTensor { name: String, dir: PathBuf },

    /// A tensor has a different shape than the config implies.
    #[error("tensor `{name}` has shape {found:?} in the checkpoint, but the config implies {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor holds NaN or infinite values: the checkpoint is damaged or diverged.
    #[error(
        "tensor `{name}` in {dir} holds {count} non-finite value(s) (the first, at flat index \
         {first_index}, is {first}); the checkpoint is damaged or was saved from a diverged \
         model: download it again or use another revision"
    )]
    NonFinite {
        name: String,
        dir: PathBuf,
        count: usize,
        first_index: usize,
        first: f64,
    },

    /// Tensors that no part of the model uses (a config that does not match its weights).
    #[error("{} tensor(s) in {dir} are not used by a {arch} model with this config: {}", names.len(), preview(names))]
    UnexpectedTensors {
        arch: String,
        dir: PathBuf,
        names: Vec<String>,
    },

    /// A Switchyard model that has no equivalent in the HF architecture asked for.
    #[error("cannot export as {arch}: {}", problems.join("; "))]
    NotRepresentable { arch: String, problems: Vec<String> },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("{path}: {reason}")]
    Safetensors { path: PathBuf, reason: String },

    /// A Switchyard checkpoint directory could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] switchyard_io::CheckpointError),

    /// A Switchyard checkpoint could not be loaded as a model.
    #[error(transparent)]
    Load(#[from] switchyard_io::LoadError),

    #[error(transparent)]
    Model(#[from] ModelError),

    #[error(transparent)]
    Moe(#[from] MoeError),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading a tokenizer (or data) failed.
    #[error(transparent)]
    Data(#[from] switchyard_data::DataError),

    /// An `--ids` argument that names a path which is not a readable file.
    #[error("--ids {arg}: {reason}")]
    Ids { arg: String, reason: String },
}

fn preview(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … ({} more)", names.len() - SHOWN));
    }
    s
}

impl InteropError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| InteropError::Io { path, source }
    }
}

pub type Result<T> = std::result::Result<T, InteropError>;
