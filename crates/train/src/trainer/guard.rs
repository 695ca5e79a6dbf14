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

/// A layer's collapse episode ends only after this many consecutive steps below
/// `train.collapse_share`: a share hovering around the limit (above it one step, below the
/// next) is one episode and gets one warning.
pub const COLLAPSE_CLEAR_STEPS: u64 = 50;

/// Expert-collapse episodes per MoE layer: [`CollapseWatch::observe`] says when a layer enters
/// one (warn) and when one ends (it stayed below the limit for [`COLLAPSE_CLEAR_STEPS`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollapseWatch {
    layers: Vec<Episode>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Episode {
    active: bool,
    /// First step of the current episode.
    started: u64,
    /// Steps above the limit in the current episode.
    collapsed_steps: u64,
    /// Consecutive steps below the limit since the last step above it.
    calm_steps: u64,
}

/// What a step changed for one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CollapseEvent {
    /// The layer entered a collapse episode: warn.
    Started,
    /// The episode that began at `started` is over: `collapsed_steps` of its steps were above
    /// the limit, and the last [`COLLAPSE_CLEAR_STEPS`] below it.
    Ended { started: u64, collapsed_steps: u64 },
}

impl CollapseWatch {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![Episode::default(); layers],
        }
    }

    /// Records whether `layer` was collapsed at `step`; returns what changed, if anything.
    pub fn observe(&mut self, layer: usize, step: u64, collapsed: bool) -> Option<CollapseEvent> {
        if layer >= self.layers.len() {
            self.layers.resize(layer + 1, Episode::default());
        }
        let e = &mut self.layers[layer];
        match (e.active, collapsed) {
            (false, true) => {
                *e = Episode {
                    active: true,
                    started: step,
                    collapsed_steps: 1,
                    calm_steps: 0,
                };
                Some(CollapseEvent::Started)
            }
            (true, true) => {
                e.collapsed_steps += 1;
                e.calm_steps = 0;
                None
            }
            (true, false) => {
                e.calm_steps += 1;
                if e.calm_steps < COLLAPSE_CLEAR_STEPS {
                    return None;
                }
                let ended = CollapseEvent::Ended {
                    started: e.started,
                    collapsed_steps: e.collapsed_steps,
                };
                *e = Episode::default();
                Some(ended)
            }
            (false, false) => None,
        }
    }
}
