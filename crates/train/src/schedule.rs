//! Learning-rate schedule: linear warmup, then cosine decay to a floor.
//!
//! A pure function of the step, so resuming needs nothing but the schedule itself (which the
//! checkpoint stores in `state.json` to detect a changed schedule on resume).

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// Linear warmup over `warmup_steps`, then cosine decay from `max_lr` to `min_lr` at
/// `total_steps`, then `min_lr` for ever.
///
/// `step` counts optimiser updates already done (0 for the first update):
/// - `step < warmup_steps`: `max_lr * (step + 1) / warmup_steps`, so the first update is not
///   wasted at lr 0 and the last warmup step reaches `max_lr`;
/// - `warmup_steps <= step < total_steps`: with `progress = (step - warmup_steps) /
///   (total_steps - warmup_steps)`, `min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(π progress))`;
/// - `step >= total_steps`: `min_lr`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub max_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LrSchedule {
    /// A schedule that is `lr` at every step.
    pub fn constant(lr: f64) -> Self {
        Self {
            max_lr: lr,
            min_lr: lr,
            warmup_steps: 0,
            total_steps: 0,
        }
    }

    /// Checks `0 <= min_lr <= max_lr` (finite) and `warmup_steps <= total_steps`.
    pub fn validate(&self) -> Result<()> {
        if !(self.max_lr.is_finite() && self.max_lr >= 0.0) {
            return Err(TrainError::config(
                "max_lr",
                format!("{} must be finite and >= 0", self.max_lr),
            ));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.max_lr) {
            return Err(TrainError::config(
                "min_lr",
                format!(
                    "{} must be finite and in [0, max_lr = {}]",
                    self.min_lr, self.max_lr
                ),
            ));
        }
        if self.warmup_steps > self.total_steps {
            return Err(TrainError::config(
                "warmup_steps",
                format!(
                    "{} exceeds total_steps = {}; warm up for a fraction of the run, or raise total_steps",
                    self.warmup_steps, self.total_steps
                ),
            ));
        }
        Ok(())
    }

    /// The learning rate for the update after `step` completed updates.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.max_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if step >= self.total_steps {
            return self.min_lr;
        }
        let progress =
            (step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64;
        // min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(pi * progress))
        self.min_lr
            + (self.max_lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}
