//! Errors of expert surgery: the request does not fit the model ([`LifecycleError::Input`],
//! the user's to fix), or the state is not what its config says
//! ([`LifecycleError::Inconsistent`], a damaged checkpoint).

use switchyard_models::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The operation's arguments do not fit this model: `what` names the argument.
    #[error("{what}: {reason}")]
    Input { what: String, reason: String },
    /// Tensors, buffers and config disagree.
    #[error("the model state is inconsistent: {0}")]
    Inconsistent(String),
    /// The resulting model config is invalid.
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl LifecycleError {
    pub fn input(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Input {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

impl From<switchyard_core::MoeError> for LifecycleError {
    fn from(e: switchyard_core::MoeError) -> Self {
        Self::Model(ModelError::from(e))
    }
}

pub type Result<T> = std::result::Result<T, LifecycleError>;
