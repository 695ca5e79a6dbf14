//! Loss-spike detection: skip an update whose loss is far above the recent mean.
//!
//! The state is part of the checkpoint (`state.json` → `user.spike`), so a resumed run makes
//! exactly the same skip decisions as an uninterrupted one.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Losses of this many recent accepted steps form the running mean.
pub const SPIKE_WINDOW: usize = 20;
/// After this many skips in a row the loss has moved to a new level rather than spiked: the
/// window is cleared and training goes on from there.
pub const MAX_CONSECUTIVE_SKIPS: u32 = 10;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpikeGuard {
    /// Losses of the last accepted steps, oldest first.
    recent: VecDeque<f64>,
    consecutive_skips: u32,
    /// Skipped updates over the whole run.
    pub total_skips: u64,
}

/// What to do with a step's update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SpikeVerdict {
    Accept,
    /// Skip it: `loss > factor × mean`.
    Skip {
        mean: f64,
    },
    /// Accept it although it is a spike, because too many steps in a row were skipped; the
    /// running window restarts.
    Reset {
        mean: f64,
    },
}

impl SpikeGuard {
    /// Judges `loss` (finite) of a step. `active` is false during warmup and when the check
    /// is off; the loss still enters the window then.
    pub fn judge(&mut self, loss: f64, factor: f64, active: bool) -> SpikeVerdict {
        let full = self.recent.len() == SPIKE_WINDOW;
        let mean = self.recent.iter().sum::<f64>() / self.recent.len().max(1) as f64;
        if active && factor > 0.0 && full && loss > factor * mean {
            self.consecutive_skips += 1;
            if self.consecutive_skips > MAX_CONSECUTIVE_SKIPS {
                self.recent.clear();
                self.consecutive_skips = 0;
                self.push(loss);
                return SpikeVerdict::Reset { mean };
            }
            self.total_skips += 1;
            return SpikeVerdict::Skip { mean };
        }
        self.consecutive_skips = 0;
        self.push(loss);
        SpikeVerdict::Accept
    }

    fn push(&mut self, loss: f64) {
        if self.recent.len() == SPIKE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(loss);
    }
}
