//! Errors of the training loop and of reading its config. [`RunError::NonFinite`] is its own
//! variant so the CLI can give it its own exit code.

use std::path::PathBuf;

use crate::{CheckpointError, TrainError};
use switchyard_data::DataError;
use switchyard_models::ModelError;

/// A problem with the configuration, found before any training.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML text does not parse; `message` carries the line and column.
    #[error("{}: {message}", path.as_ref().map_or("config".into(), |p| p.display().to_string()))]
    Syntax {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key that no part of the config knows (a typo, or a key in the wrong section).
    #[error("unknown config key `{key}`{}", suggestion.as_ref().map_or(String::new(), |s| format!("; did you mean `{s}`?")))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
    },
    /// A value of the wrong type or shape for its key.
    #[error("config key `{key}`: {message}")]
    BadValue { key: String, message: String },
    /// A value of the right type that is out of range or inconsistent with another key.
    #[error("invalid config `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    /// A `--set key=value` that cannot be applied.
    #[error("cannot apply override `{assignment}`: {reason}")]
    Override { assignment: String, reason: String },
    /// `init.from` does not name a usable checkpoint.
    #[error("init.from = {}: {reason}", path.display())]
    Init { path: PathBuf, reason: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Everything that can stop a training run, evaluation or generation.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The loss or the gradient norm is NaN or infinite. Nothing was updated or saved for this
    /// step, so the newest checkpoint is the last good state.
    #[error(
        "training stopped at step {step}: the {what} is {value} (not finite); no update was applied \
         and no checkpoint written{}",
        last_checkpoint.as_ref().map_or(String::new(), |p| format!(", the last good checkpoint is {}", p.display()))
    )]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
        last_checkpoint: Option<PathBuf>,
    },
    /// A checkpoint cannot be resumed with this config.
    #[error("cannot resume from {}: {reason}", path.display())]
    Resume { path: PathBuf, reason: String },
    #[error("data: {0}")]
    Data(#[from] DataError),
    /// A lifecycle hook's surgery found the model state inconsistent.
    #[error("expert surgery: {0}")]
    Lifecycle(String),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("optimiser: {0}")]
    Optim(#[from] TrainError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl From<switchyard_core::MoeError> for RunError {
    fn from(e: switchyard_core::MoeError) -> Self {
        RunError::Model(e.into())
    }
}

/// A model that cannot be loaded is a checkpoint the run cannot resume from.
impl From<switchyard_io::LoadError> for RunError {
    fn from(e: switchyard_io::LoadError) -> Self {
        use switchyard_io::LoadError;
        match e {
            LoadError::Checkpoint(e) => RunError::Checkpoint(e),
            LoadError::Incompatible { path, reason } => RunError::Resume { path, reason },
            LoadError::Model(e) => RunError::Model(e),
            LoadError::Data(e) => RunError::Data(e),
        }
    }
}

impl RunError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| RunError::Io { op, path, source }
    }
}

pub type RunResult<T> = std::result::Result<T, RunError>;
