//! Fault injection for tests of the guards: a NaN or a spike in the loss of a chosen step,
//! or NaN written into one expert's weights (or AdamW moments) at the start of a chosen step
//! (for expert replicas, `trainer::replica`).
//!
//! It is not part of the run config on purpose: the config is saved in every checkpoint, so a
//! fault there would fire again on every `--resume`. A test sets it on a [`Trainer`] with
//! [`Trainer::inject_faults`], or, through the binary, with the environment variables
//! [`NAN_LOSS_ENV`] and [`SPIKE_LOSS_ENV`], read when the trainer is built and never saved.
//! Checkpoints written by earlier versions may still carry a `fault` table in their
//! `config.json`; it is ignored, with a warning, when such a run is resumed.
//!
//! [`Trainer`]: super::Trainer
//! [`Trainer::inject_faults`]: super::Trainer::inject_faults

use super::error::ConfigError;

/// Step (1-based: the step that would complete update `k`) whose loss is made NaN.
pub const NAN_LOSS_ENV: &str = "SWITCHYARD_FAULT_NAN_LOSS_AT_STEP";
/// Step whose loss is multiplied by [`SPIKE_FAULT_SCALE`] (a loss spike).
pub const SPIKE_LOSS_ENV: &str = "SWITCHYARD_FAULT_SPIKE_LOSS_AT_STEP";
/// `LAYER:EXPERT@STEP`, e.g. `0:1@5`: at the start of step 5, expert 1 of the MoE layer
/// `model.layers.0` gets NaN weights.
pub const NAN_EXPERT_ENV: &str = "SWITCHYARD_FAULT_NAN_EXPERT";
/// How much a spike fault inflates the loss.
pub const SPIKE_FAULT_SCALE: f64 = 100.0;

/// Deliberate faults of one trainer (none by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Make the loss of this step NaN.
    pub nan_loss_at_step: Option<u64>,
    /// Multiply the loss of this step by [`SPIKE_FAULT_SCALE`].
    pub spike_loss_at_step: Option<u64>,
    /// Write NaN into one expert's weights or moments (fires once).
    pub nan_expert: Option<ExpertFault>,
}

/// NaN in one expert, written at the start of `step` (before its forward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertFault {
    /// The model layer (`model.layers.{layer}`), which must be an MoE layer.
    pub layer: usize,
    /// The routed expert's index in that layer.
    pub expert: usize,
    pub step: u64,
    /// NaN goes into the expert's AdamW moments (`exp_avg`) instead of its weights.
    pub moments: bool,
}

impl Faults {
    /// The faults [`NAN_LOSS_ENV`] and [`SPIKE_LOSS_ENV`] ask for; unset variables ask for none.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            nan_loss_at_step: step_from_env(NAN_LOSS_ENV)?,
            spike_loss_at_step: step_from_env(SPIKE_LOSS_ENV)?,
            nan_expert: expert_from_env(NAN_EXPERT_ENV)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn step_from_env(var: &str) -> Result<Option<u64>, ConfigError> {
    let Some(v) = std::env::var_os(var) else {
        return Ok(None);
    };
    let v = v.to_string_lossy();
    match v.trim().parse::<u64>() {
        Ok(step) if step >= 1 => Ok(Some(step)),
        _ => Err(ConfigError::invalid(
            var,
            format!("`{v}` is not a step number (1 or more); unset it to inject no fault"),
        )),
    }
}

impl ExpertFault {
    /// `LAYER:EXPERT@STEP` (the format of [`NAN_EXPERT_ENV`]), a weights fault; `None` if
    /// `text` is not one (the step must be 1 or more).
    pub fn parse(text: &str) -> Option<Self> {
        let (le, step) = text.trim().split_once('@')?;
        let (layer, expert) = le.split_once(':')?;
        let step = step.trim().parse::<u64>().ok().filter(|&s| s >= 1)?;
        Some(ExpertFault {
            layer: layer.trim().parse().ok()?,
            expert: expert.trim().parse().ok()?,
            step,
            moments: false,
        })
    }
}

fn expert_from_env(var: &str) -> Result<Option<ExpertFault>, ConfigError> {
    let Some(v) = std::env::var_os(var) else {
        return Ok(None);
    };
    let v = v.to_string_lossy();
    ExpertFault::parse(&v).map(Some).ok_or_else(|| {
        ConfigError::invalid(
            var,
            format!("`{v}` is not LAYER:EXPERT@STEP (e.g. 0:1@5, step 1 or more); unset it to inject no fault"),
        )
    })
}
