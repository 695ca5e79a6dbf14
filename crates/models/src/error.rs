//! Errors of the models crate. Variants name the operation or config field and the values
//! involved, so the message alone says what to change.

use switchyard_core::MoeError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is invalid. `field` is the config key (dotted, e.g.
    /// `ffn.sparse.router.k`), `reason` says what is wrong and how to fix it.
    #[error("invalid model config `{field}`: {reason}")]
    Config { field: String, reason: String },
    /// Input of the wrong shape or range reached a forward pass or generation.
    #[error("{op}: {reason}")]
    Input { op: &'static str, reason: String },
    /// The job needs more memory than the machine has available (see [`crate::memory`]).
    #[error("{0}")]
    TooLarge(Box<crate::memory::TooLarge>),
    /// An MoE layer failed at run time.
    #[error("MoE layer: {0}")]
    Moe(MoeError),
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
    pub fn input(op: &'static str, reason: impl Into<String>) -> Self {
        ModelError::Input {
            op,
            reason: reason.into(),
        }
    }

    /// An MoE config error re-labelled with where the MoE config sits in the model's config
    /// (`prefix` = `ffn.sparse`, `moe`, ...).
    pub(crate) fn from_moe_config(prefix: &str, e: MoeError) -> Self {
        match e {
            MoeError::Config { field, reason } => ModelError::Config {
                field: format!("{prefix}.{field}"),
                reason,
            },
            other => other.into(),
        }
    }
}

impl From<MoeError> for ModelError {
    fn from(e: MoeError) -> Self {
        match e {
            MoeError::Candle(c) => ModelError::Candle(c),
            other => ModelError::Moe(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
