//! Errors of the kernels crate. Variants name the operation and the values involved.

/// Everything that can go wrong in a kernel call: bad input shapes, or candle failing.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Input of the wrong shape or kind reached a kernel.
    #[error("{op}: {reason}")]
    Input { op: &'static str, reason: String },
    /// A tensor operation failed inside candle.
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl KernelError {
    pub fn input(op: &'static str, reason: impl Into<String>) -> Self {
        KernelError::Input {
            op,
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, KernelError>;
