//! Errors of the analysis crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{what}: {reason}")]
    Input { what: &'static str, reason: String },
    #[error("plotting {what} failed: {reason}")]
    Plot { what: String, reason: String },
    #[error(transparent)]
    Model(#[from] switchyard_models::ModelError),
    #[error(transparent)]
    Core(#[from] switchyard_core::MoeError),
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl AnalyzeError {
    pub fn input(what: &'static str, reason: impl Into<String>) -> Self {
        AnalyzeError::Input {
            what,
            reason: reason.into(),
        }
    }
    pub fn file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        AnalyzeError::File {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, AnalyzeError>;
