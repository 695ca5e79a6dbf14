//! Checkpoints of a training run: the file format and run directory are `switchyard-io`'s
//! (re-exported here); this module adds what only the trainer knows, the [`AdamW`] state
//! and the [`LrSchedule`] in `state.json`.
//!
//! ```text
//! runs/x/
//!   latest                  "step-00001200\n"
//!   step-00001200/
//!     model.safetensors      parameters, named as in the ParamStore
//!     optimizer.safetensors  AdamW state: <param>.exp_avg, <param>.exp_avg_sq, <param>.step
//!     config.json            the run's TrainConfig
//!     state.json             step, RNG states, data cursor, LR schedule, router buffers,
//!                            user data, and size + CRC-32 of the three files above
//! ```

use std::path::{Path, PathBuf};

pub use switchyard_io::checkpoint::{check_load_fits, find_step_dir, restore_into, SaveOptions};
pub use switchyard_io::run_dir::{
    CONFIG_FILE, LATEST_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE,
};
pub use switchyard_io::{
    mem_available_bytes, CheckpointError, FileDigest, RngState, FORMAT_VERSION,
};

use crate::{AdamW, LrSchedule, TrainError};

type Result<T> = std::result::Result<T, CheckpointError>;

/// The trainer's non-tensor state (see [`switchyard_io::TrainState`]).
pub type TrainState = switchyard_io::TrainState<LrSchedule>;
/// A loaded, verified checkpoint of a training run.
pub type Checkpoint = switchyard_io::Checkpoint<LrSchedule>;

/// What to save.
pub struct CheckpointContents<'a> {
    pub params: &'a switchyard_core::ParamStore,
    /// `None` writes an empty `optimizer.safetensors` (an inference-only export).
    pub optimizer: Option<&'a AdamW>,
    pub state: TrainState,
    /// The caller's run/model config, stored verbatim as `config.json`.
    pub config: serde_json::Value,
}

/// [`save_checkpoint_with`] keeping every checkpoint.
pub fn save_checkpoint(
    run_dir: impl AsRef<Path>,
    step: u64,
    contents: &CheckpointContents,
) -> Result<PathBuf> {
    save_checkpoint_with(run_dir, step, contents, &SaveOptions::default())
}

/// Writes `run_dir/step-<step:08>/` crash-safely ([`switchyard_io::save_checkpoint_with`]),
/// with the optimiser's moments, and points `latest` at it; returns its path.
pub fn save_checkpoint_with(
    run_dir: impl AsRef<Path>,
    step: u64,
    contents: &CheckpointContents,
    opts: &SaveOptions,
) -> Result<PathBuf> {
    let optimizer = match contents.optimizer {
        Some(opt) => opt.state_tensors().map_err(|e| match e {
            TrainError::Candle(e) => CheckpointError::Candle(e),
            other => CheckpointError::Invalid(other.to_string()),
        })?,
        None => Vec::new(),
    };
    let files = switchyard_io::CheckpointContents {
        params: contents.params,
        optimizer,
        state: contents.state.clone(),
        config: contents.config.clone(),
    };
    switchyard_io::save_checkpoint_with(run_dir, step, &files, opts)
}

/// Loads and verifies a checkpoint (a step directory, or a run directory's latest; see
/// [`switchyard_io::load_checkpoint`]).
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    switchyard_io::load_checkpoint(path)
}

/// Loads the checkpoint's optimiser state into `opt` via [`AdamW::load_state`], with every
/// mismatch reported against `optimizer.safetensors`.
pub fn restore_optimizer(opt: &mut AdamW, checkpoint: &Checkpoint) -> Result<()> {
    let path = checkpoint.dir.join(OPTIMIZER_FILE);
    if checkpoint.optimizer.is_empty() && opt.names().next().is_some() {
        let problems = vec!["the checkpoint was saved without optimiser state".to_string()];
        return Err(CheckpointError::Mismatch { path, problems });
    }
    opt.load_state(&checkpoint.optimizer).map_err(|e| match e {
        TrainError::OptimizerState { problems } => CheckpointError::Mismatch { path, problems },
        TrainError::Candle(e) => CheckpointError::Candle(e),
        other => CheckpointError::Invalid(other.to_string()),
    })
}
