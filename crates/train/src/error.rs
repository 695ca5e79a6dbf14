//! Errors of the optimiser, gradient utilities and schedules. Checkpoint I/O has its own
//! [`CheckpointError`](crate::checkpoint::CheckpointError), whose messages name files.

/// Everything that can go wrong in `optim`, `grads` and `schedule`.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value is invalid. `field` is the config key, `reason` says what is
    /// wrong and how to fix it.
    #[error("invalid training config `{field}`: {reason}")]
    Config { field: String, reason: String },
    /// A parameter, or its gradient, cannot be used (wrong dtype, mismatched shape).
    #[error("parameter `{name}`: {reason}")]
    Param { name: String, reason: String },
    /// Optimiser state handed to `load_state` does not match the parameters; every problem
    /// is listed, one per line.
    #[error("optimizer state does not match the parameters ({} problems):\n  - {}", problems.len(), problems.join("\n  - "))]
    OptimizerState { problems: Vec<String> },
    /// A tensor operation failed inside candle.
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl TrainError {
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TrainError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
