//! Errors of the core crate. Variants name the operation and the values involved, so a user
//! can tell from the message alone what to change.

/// Everything that can go wrong while building or running an MoE layer.
#[derive(Debug, thiserror::Error)]
pub enum MoeError {
    /// A configuration value is invalid. `field` is the config key, `reason` says what is
    /// wrong and how to fix it.
    #[error("invalid MoE config `{field}`: {reason}")]
    Config { field: String, reason: String },
    /// Input of the wrong shape or kind reached a forward pass.
    #[error("{op}: {reason}")]
    Input { op: &'static str, reason: String },
    /// A tensor operation failed inside candle.
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl MoeError {
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MoeError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
    pub fn input(op: &'static str, reason: impl Into<String>) -> Self {
        MoeError::Input {
            op,
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, MoeError>;

/// Kernel errors keep their message: a shape error is reported as the same `Input` error the
/// readable code gives.
impl From<switchyard_kernels::KernelError> for MoeError {
    fn from(e: switchyard_kernels::KernelError) -> Self {
        match e {
            switchyard_kernels::KernelError::Input { op, reason } => MoeError::Input { op, reason },
            switchyard_kernels::KernelError::Candle(e) => MoeError::Candle(e),
        }
    }
}
